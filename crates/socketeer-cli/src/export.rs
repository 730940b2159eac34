//! `socketeer export`: a hub database's records as an MCAP recording, offline (the hub may be
//! running: the database is only read).

use std::io::{IsTerminal, Write};

use anyhow::Context;
use socketeer_hub::recording::{Compression, McapExport, export_mcap};

use crate::cli::{CompressionArg, ExportArgs};
use crate::failure::UsageError;

pub(crate) async fn run(args: &ExportArgs) -> anyhow::Result<i32> {
    if let Some(device) = &args.device {
        if !socketeer::keys::valid_device_name(device) {
            return Err(UsageError(format!("--device {device:?}: not a device name")).into());
        }
    }
    let (from, to) = (args.from.unwrap_or(0.0), args.to.unwrap_or(f64::MAX));
    if !(from.is_finite() && to >= from) {
        return Err(UsageError("--from must not be after --to".into()).into());
    }
    let what = McapExport {
        device: args.device.clone(),
        from,
        to,
        compression: match args.compression {
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::None => Compression::None,
        },
    };
    let db = socketeer_hub::config::Database::parse(&args.db)
        .map_err(|why| UsageError(format!("export: --db: {why}")))?;
    let output = args.output.clone();
    let to_stdout = output.as_os_str() == "-";
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(UsageError(
            "-o -: an MCAP recording is binary; redirect stdout or give -o FILE".into(),
        )
        .into());
    }
    let started = std::time::Instant::now();
    let (summary, bytes) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        if to_stdout {
            let mut out = Counted(std::io::BufWriter::new(std::io::stdout().lock()), 0);
            let summary = export_mcap(&db, &what, &mut out)?;
            out.flush()?;
            return Ok((summary, out.1));
        }
        // Written beside its name and renamed once complete: a failed export leaves no
        // half a recording under the name asked for.
        let partial = output.with_extension("mcap.partial");
        let file = std::fs::File::create(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        let mut out = Counted(std::io::BufWriter::with_capacity(1 << 20, file), 0);
        let written = export_mcap(&db, &what, &mut out).and_then(|summary| {
            out.flush()?;
            out.0.get_ref().sync_all()?;
            Ok(summary)
        });
        let summary = match written {
            Ok(summary) => summary,
            Err(err) => {
                let _ = std::fs::remove_file(&partial);
                return Err(err);
            }
        };
        std::fs::rename(&partial, &output)
            .with_context(|| format!("cannot write {}", output.display()))?;
        Ok((summary, out.1))
    })
    .await
    .context("export")?
    .context("export")?;
    let seconds = started.elapsed().as_secs_f64();
    errln!(
        "socketeer: export: {} on {}, {:.1} MB in {:.2} s ({:.0} MB/s) to {}",
        counted(summary.messages, "message"),
        counted(summary.channels, "channel"),
        bytes as f64 / 1e6,
        seconds,
        bytes as f64 / 1e6 / seconds.max(1e-9),
        args.output.display()
    );
    Ok(0)
}

/// A writer that counts what went through it.
struct Counted<W>(W, u64);

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1 += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// `1 message`, `2 messages`.
pub(crate) fn counted(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
