//! Command line: parse arguments, initialise logging, call into the library, map the outcome
//! to an exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};

use tollgate::config::{self, Config, DEFAULT_CONFIG_PATH};

/// mimalloc rather than glibc's malloc: a request allocates a few dozen small objects and
/// frees them on the same thread, which mimalloc's per-thread free lists serve without
/// locks or bin consolidation (measured in BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Reverse-proxy authentication sidecar"
)]
struct Cli {
    /// Log format on stdout.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Pretty,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: the public proxy listener and the admin listener.
    Run {
        /// Main config file.
        #[arg(short, long, env = "TOLLGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Validate both config files, print a summary or every error (exit 1 on errors).
    Check {
        #[arg(short, long, env = "TOLLGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Run everything locally: a development issuer, an echo upstream and Tollgate on the
    /// built-in sample config; prints ready-to-paste curl commands. Ctrl-C stops it.
    Dev {
        /// Public listener (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Admin listener (default 127.0.0.1:9901).
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
    },
    /// Explain how one request would be decided, step by step. Exit 0 when allowed, 1 when not.
    Explain {
        #[arg(short, long, env = "TOLLGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// A bearer token (verified against --jwks, or the provider's live keys).
        #[arg(long, conflicts_with = "claims")]
        token: Option<String>,
        /// A JWKS file to verify --token against, instead of fetching the provider's keys.
        #[arg(long, requires = "token")]
        jwks: Option<PathBuf>,
        /// Raw claims as JSON (not verified; marked as such).
        #[arg(long)]
        claims: Option<String>,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long)]
        path: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when the admin listener's /healthz answers 200 (for images without curl).
    Healthcheck {
        /// Admin address to probe; by default `admin_listen` from the config file.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        #[arg(short, long, env = "TOLLGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Healthcheck { admin, config } => healthcheck(admin, &config),
        Command::Explain {
            config,
            token,
            jwks,
            claims,
            method,
            path,
            json,
        } => explain(&config, token, jwks, claims, &method, &path, json),
        Command::Dev { listen, admin } => {
            init_logging_to_stderr();
            dev(tollgate::dev::DevOptions { listen, admin })
        }
        Command::Run { config } => {
            // Held until exit: dropping it flushes the lines still queued.
            let _log = init_logging(cli.log_format);
            run(&config)
        }
    }
}

/// Logs (audit events included) go to stdout through a writer thread: a request formats its
/// line and queues it; the thread writes queued lines in batches (one `write` per 64 KiB or
/// whenever the queue runs empty). The queue is bounded and never drops a line: when it is
/// full, requests wait for the writer (back-pressure rather than lost audit events).
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TOLLGATE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(64 * 1024)
        .thread_name("tollgate-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
    if matches!(format, LogFormat::Json) {
        tollgate::audit::write_json_to(writer.clone());
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        LogFormat::Pretty => builder.init(),
    }
    guard
}

/// Dev mode prints its instructions on stdout; logs go to stderr, for people.
fn init_logging_to_stderr() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,audit=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn dev(opts: tollgate::dev::DevOptions) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(tollgate::dev::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate dev: {e}");
            ExitCode::FAILURE
        }
    }
}

fn explain(
    config_path: &Path,
    token: Option<String>,
    jwks: Option<PathBuf>,
    claims: Option<String>,
    method: &str,
    path: &str,
    json: bool,
) -> ExitCode {
    use tollgate::explain::Credential;
    let cfg = match config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Ok(method) = method.to_ascii_uppercase().parse::<http::Method>() else {
        eprintln!("invalid method {method:?}");
        return ExitCode::FAILURE;
    };
    let cred = match (token, claims) {
        (Some(t), _) => {
            let jwks = match jwks.map(std::fs::read) {
                None => None,
                Some(Ok(b)) => Some(bytes::Bytes::from(b)),
                Some(Err(e)) => {
                    eprintln!("cannot read --jwks: {e}");
                    return ExitCode::FAILURE;
                }
            };
            Credential::Token { token: t, jwks }
        }
        (None, Some(c)) => match serde_json::from_str::<serde_json::Value>(&c) {
            Ok(serde_json::Value::Object(m)) => Credential::Claims(m),
            _ => {
                eprintln!("--claims must be a JSON object");
                return ExitCode::FAILURE;
            }
        },
        (None, None) => Credential::None,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let e = rt.block_on(tollgate::explain::explain(cfg, method, path, cred));
    if json {
        println!("{}", serde_json::to_string_pretty(&e).unwrap_or_default());
    } else {
        print!("{}", tollgate::explain::render_text(&e));
    }
    if e.verdict.error.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            print!("{}", summary(&cfg));
            println!("{}: configuration OK", path.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} error(s), configuration not valid",
                path.display(),
                errors.0.len()
            );
            ExitCode::FAILURE
        }
    }
}

fn healthcheck(admin: Option<std::net::SocketAddr>, path: &Path) -> ExitCode {
    let addr = match admin {
        Some(a) => a,
        None => match config::load(path) {
            Ok(cfg) => cfg.admin_listen,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
    };
    // A wildcard bind is probed on loopback.
    let addr = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
        }
        ip if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    };
    match tollgate::admin::probe_health(addr) {
        Ok(()) => {
            println!("healthy: http://{addr}/healthz");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("unhealthy: http://{addr}/healthz: {e}");
            ExitCode::FAILURE
        }
    }
}

fn summary(cfg: &Config) -> String {
    let mut s = String::new();
    let tls = if cfg.tls.is_some() { " (TLS)" } else { "" };
    s.push_str(&format!("listen:    {}{tls}\n", cfg.listen));
    s.push_str(&format!("admin:     {}\n", cfg.admin_listen));
    s.push_str(&format!(
        "upstream:  {}://{}\n",
        cfg.upstream.scheme, cfg.upstream.authority
    ));
    let enabled = cfg.providers.iter().filter(|p| p.enabled).count();
    s.push_str(&format!(
        "providers: {} ({enabled} enabled)\n",
        cfg.providers.len()
    ));
    for p in &cfg.providers {
        let state = if p.enabled { "" } else { " [disabled]" };
        s.push_str(&format!("  - {} {}{state}\n", p.name, p.issuer));
    }
    s.push_str(&format!(
        "accounts:  {} from {} ({} identity mappings)\n",
        cfg.accounts.len(),
        cfg.accounts_file.display(),
        cfg.identity_mappings.len()
    ));
    s.push_str(&format!(
        "roles:     {}, scopes: {}\n",
        cfg.roles.len(),
        cfg.scopes.len()
    ));
    s.push_str(&format!("routes:    {}\n", cfg.routes.len()));
    if let Some(a) = &cfg.assertion {
        s.push_str(&format!(
            "assertion: iss {} aud {} kid {} ({}s)\n",
            a.issuer,
            a.audience,
            a.key.kid,
            a.lifetime.as_secs()
        ));
    }
    s
}

/// The serving runtime: one worker thread per core (`TOKIO_WORKER_THREADS` overrides, as
/// tokio documents). With one worker, tokio's single-threaded scheduler: the same one
/// thread without the work-stealing machinery (cross-thread queues, atomics on every wake)
/// that only pays off with more than one.
fn runtime_builder() -> tokio::runtime::Builder {
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
}

fn run(path: &Path) -> ExitCode {
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!(error = %e, "configuration error");
            }
            return ExitCode::FAILURE;
        }
    };
    let rt = match runtime_builder().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        // Signal handlers first: a signal that arrives while starting must not take the
        // default action (SIGHUP and SIGTERM would end the process on the spot).
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return ExitCode::FAILURE;
        };
        let app = match tollgate::app::App::new(cfg) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        // SIGHUP and file changes reload the configuration.
        let _reload = tollgate::reload::spawn(app.clone());
        let running = match tollgate::server::start(app).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let sig = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = sig, "shutting down: draining in-flight requests");
        running.shutdown();
        running.wait().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}
