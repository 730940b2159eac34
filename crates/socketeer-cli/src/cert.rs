//! `socketeer keygen` and `socketeer cert`: a key for `--key-file`, and a private CA with a
//! server certificate for `--tls-cert`/`--tls-key` (clients trust `ca.pem` or pin the printed
//! fingerprint).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::cli::{CertArgs, KeygenArgs};
use crate::failure::UsageError;

/// How long the certificates `socketeer cert` makes are valid.
const CA_DAYS: i64 = 3650;
const SERVER_DAYS: i64 = 825;

pub(crate) fn keygen(args: &KeygenArgs) -> anyhow::Result<i32> {
    let key = socketeer::keys::generate_key()?;
    match &args.device {
        Some(device) if !socketeer::keys::valid_device_name(device) => Err(UsageError(format!(
            "--device \"{device}\": a device name is 1-64 of A-Z a-z 0-9 . _ -"
        ))
        .into()),
        Some(device) => {
            outln!("{device} {key}")?;
            Ok(0)
        }
        None => {
            outln!("{key}")?;
            Ok(0)
        }
    }
}

/// Writes `contents` to `path`, mode `mode`, refusing to replace a file unless `force`.
fn write_file(path: &Path, contents: &str, mode: u32, force: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(mode);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).with_context(|| {
        if path.exists() && !force {
            format!("{} exists (use --force to replace it)", path.display())
        } else {
            format!("cannot write {}", path.display())
        }
    })?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub(crate) fn cert(args: &CertArgs) -> anyhow::Result<i32> {
    let names = if args.names.is_empty() {
        vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ]
    } else {
        args.names.clone()
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let now = time::OffsetDateTime::now_utc();

    let ca_key = KeyPair::generate().context("cannot make the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "socketeer private CA");
    ca_params.not_before = now - time::Duration::days(1);
    ca_params.not_after = now + time::Duration::days(CA_DAYS);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("cannot sign the CA certificate")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().context("cannot make the server key")?;
    let mut params =
        CertificateParams::new(names.clone()).map_err(|e| UsageError(format!("--name: {e}")))?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].clone());
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(SERVER_DAYS);
    let cert = params
        .signed_by(&key, &issuer)
        .context("cannot sign the server certificate")?;

    let out = &args.out;
    write_file(&out.join("ca.pem"), &ca_cert.pem(), 0o644, args.force)?;
    write_file(
        &out.join("ca-key.pem"),
        &issuer.key().serialize_pem(),
        0o600,
        args.force,
    )?;
    write_file(&out.join("server.pem"), &cert.pem(), 0o644, args.force)?;
    write_file(
        &out.join("server-key.pem"),
        &key.serialize_pem(),
        0o600,
        args.force,
    )?;
    let fingerprint = socketeer::tls::fingerprint(cert.der());
    outln!(
        "wrote {0}/ca.pem {0}/ca-key.pem {0}/server.pem {0}/server-key.pem",
        out.display()
    )?;
    outln!("server certificate for: {}", names.join(", "))?;
    outln!("sha256 fingerprint: {fingerprint}")?;
    outln!(
        "serve with:   --tls-cert {0}/server.pem --tls-key {0}/server-key.pem",
        out.display()
    )?;
    outln!(
        "connect with: --ca {}/ca.pem   or   --pin {fingerprint}",
        out.display()
    )?;
    Ok(0)
}
