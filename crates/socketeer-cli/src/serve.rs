//! Running a service: bind every `--listen` endpoint (all or nothing), print the addresses
//! really bound, serve them under one shutdown switch and one connection cap, and drain on
//! SIGINT/SIGTERM (a second signal exits at once).

use anyhow::Context;
use socketeer::{
    BindOptions, ConnectionLimit, DatagramHandler, DatagramServer, DatagramSocket, Endpoint,
    Handler, Limits, Listener, Server, Shutdown, Signals,
};
use tokio::task::JoinSet;

use crate::cli::ServeArgs;
use crate::failure::{EXIT_INTERRUPTED, UsageError, parse_endpoint};
use crate::guard::ServerGuard;

/// A service as the runner needs it: a name, a default endpoint, a handler per connection, and
/// optionally a datagram handler.
pub(crate) struct Service<F, D> {
    pub(crate) name: &'static str,
    pub(crate) default_endpoint: &'static str,
    pub(crate) make_handler: F,
    pub(crate) datagram: Option<D>,
    /// Told of each failed authentication (with the device name claimed), if anyone is.
    pub(crate) auth_failures: Option<socketeer::AuthFailureHook>,
}

/// The datagram handler of a service that has none.
#[derive(Clone)]
pub(crate) enum NoDatagrams {}

impl DatagramHandler for NoDatagrams {
    async fn handle(&self, _datagram: socketeer::Datagram) -> socketeer::Result<()> {
        match *self {}
    }
}

/// The limits the common flags ask for.
pub(crate) fn limits(args: &ServeArgs) -> Limits {
    let mut limits = Limits::default();
    limits.max_connections = args.max_conns as usize;
    limits.idle_timeout = (!args.idle_timeout.is_zero()).then_some(args.idle_timeout);
    limits.grace = args.grace;
    limits.max_line = args.max_line as usize;
    limits.handshake_timeout = args.guard.handshake_timeout;
    limits
}

enum Bound {
    Stream(Listener),
    Datagram(DatagramSocket),
}

/// Serves `service` on the endpoints in `args` until a signal, then drains. Returns exit status 0.
pub(crate) async fn serve<F, H, D>(args: &ServeArgs, service: Service<F, D>) -> anyhow::Result<i32>
where
    F: Fn() -> H + Clone + Send + Sync + 'static,
    H: Handler,
    D: DatagramHandler + Clone,
{
    let mut runner = Runner::new()?;
    runner.add(args, service).await?;
    runner.run(args.grace).await
}

/// Several services under one shutdown: bind each (all or nothing, printing every endpoint
/// really bound), then [`run`](Runner::run) until a signal and drain them together.
pub(crate) struct Runner {
    signals: Signals,
    shutdown: Shutdown,
    servers: JoinSet<anyhow::Result<()>>,
    names: Vec<&'static str>,
}

impl Runner {
    /// Catches signals first: a script may signal as soon as it reads "listening on".
    pub(crate) fn new() -> anyhow::Result<Runner> {
        Ok(Runner {
            signals: Signals::new().context("cannot install signal handlers")?,
            shutdown: Shutdown::new(),
            servers: JoinSet::new(),
            names: Vec::new(),
        })
    }

    /// The shutdown switch the services run under, for tasks of one's own.
    pub(crate) fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Runs a task of one's own (an HTTP server, say) alongside; `run` waits for it too.
    pub(crate) fn spawn(
        &mut self,
        task: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.servers.spawn(task);
    }

    /// Binds `service` on the endpoints in `args` (its default if none), prints them, and
    /// starts serving. Returns the endpoints as bound (port 0 resolved).
    pub(crate) async fn add<F, H, D>(
        &mut self,
        args: &ServeArgs,
        service: Service<F, D>,
    ) -> anyhow::Result<Vec<Endpoint>>
    where
        F: Fn() -> H + Clone + Send + Sync + 'static,
        H: Handler,
        D: DatagramHandler + Clone,
    {
        let written = if args.listen.is_empty() {
            vec![service.default_endpoint.to_owned()]
        } else {
            args.listen.clone()
        };
        let endpoints = written
            .iter()
            .map(|w| parse_endpoint(w))
            .collect::<Result<Vec<Endpoint>, _>>()?;
        let guard = ServerGuard::from_args(&args.guard)?;
        if guard.needs_stream() {
            if let Some(ep) = endpoints.iter().find(|ep| !ep.is_stream()) {
                return Err(UsageError(format!(
                    "{ep}: --key-file and --tls-cert need a stream endpoint (tcp:// or unix://)"
                ))
                .into());
            }
        }
        if service.datagram.is_none() {
            if let Some(ep) = endpoints.iter().find(|ep| !ep.is_stream()) {
                return Err(UsageError(format!(
                    "{ep}: {} needs a stream endpoint (tcp:// or unix://)",
                    service.name
                ))
                .into());
            }
        }
        let mut options = BindOptions::default();
        options.unix_mode = args.socket_mode;
        let mut bound = Vec::with_capacity(endpoints.len());
        for ep in &endpoints {
            bound.push(if ep.is_stream() {
                Bound::Stream(Listener::bind(ep, &options).await?)
            } else {
                Bound::Datagram(DatagramSocket::bind(ep, &options).await?)
            });
        }

        let limits = limits(args);
        let connections = ConnectionLimit::new(limits.max_connections);
        let mut local = Vec::with_capacity(bound.len());
        for socket in bound {
            match socket {
                Bound::Stream(listener) => {
                    outln!("listening on {}", listener.local_endpoint())?;
                    local.push(listener.local_endpoint().clone());
                    let mut gate = guard.gate_for(listener.local_endpoint());
                    if let Some(hook) = &service.auth_failures {
                        gate = gate.on_auth_failure(hook.clone());
                    }
                    let server = Server::new(listener, service.make_handler.clone())
                        .limits(limits.clone())
                        .connection_limit(connections.clone())
                        .shutdown(self.shutdown.clone())
                        .gate(gate)
                        .threads(args.threads());
                    self.servers
                        .spawn(async move { Ok(server.serve_forever().await?) });
                }
                Bound::Datagram(socket) => {
                    outln!("listening on {}", socket.local_endpoint())?;
                    local.push(socket.local_endpoint().clone());
                    let handler = service
                        .datagram
                        .clone()
                        .context("datagram handler checked above")?;
                    let server = DatagramServer::new(socket, handler)
                        .limits(limits.clone())
                        .shutdown(self.shutdown.clone())
                        .access(guard.access.clone());
                    self.servers
                        .spawn(async move { Ok(server.serve_forever().await?) });
                }
            }
        }
        self.names.push(service.name);
        Ok(local)
    }

    /// Serves until SIGINT/SIGTERM, then drains everything within `grace`. Returns exit
    /// status 0.
    pub(crate) async fn run(mut self, grace: std::time::Duration) -> anyhow::Result<i32> {
        let names = self.names.join(", ");
        tracing::info!(service = names, "serving");
        tokio::spawn(stop_on_signals(self.signals, self.shutdown, grace));
        while let Some(done) = self.servers.join_next().await {
            done.context("server task panicked")??;
        }
        tracing::info!(service = names, "stopped");
        Ok(0)
    }
}

/// First SIGINT/SIGTERM: stop accepting and drain. Second: exit at once with status 130.
async fn stop_on_signals(mut signals: Signals, shutdown: Shutdown, grace: std::time::Duration) {
    let first = signals.recv().await;
    tracing::info!(
        signal = first,
        ?grace,
        "shutting down: no new connections; live ones get the grace period (signal again to exit now)"
    );
    shutdown.trigger();
    let second = signals.recv().await;
    errln!("socketeer: {second} again: exiting at once");
    crate::terminal::exit(EXIT_INTERRUPTED);
}
