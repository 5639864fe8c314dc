//! Hot reload (design §8.4): SIGHUP and a debounced watch of the directories holding both
//! config files. A new config is loaded, validated and compiled completely, then swapped in
//! as one snapshot; on any error the last good snapshot stays and the errors are logged with
//! file:line:column and counted. Watching directories (not files) catches editors that
//! replace files by rename and Kubernetes ConfigMap updates (a `..data` symlink swap).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::app::App;
use crate::config::{self, ConfigErrors};
use crate::state::Snapshot;

/// Quiet time after the last file event before reloading (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Why a reload was refused; the previous configuration stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Compile(#[from] crate::tls::TlsError),
}

/// Loads, validates and compiles the configuration from the current main file path, then
/// swaps it in. Counts the result either way.
pub fn reload_now(app: &App) -> Result<(), ReloadError> {
    let old = app.snapshot();
    let path = old.config.main_file.clone();
    let result = config::load(&path)
        .map_err(ReloadError::from)
        .and_then(|cfg| Snapshot::compile(cfg, &app.keys, &app.metrics).map_err(ReloadError::from));
    match result {
        Ok(snap) => {
            warn_about_restart_only_settings(&old.config, &snap.config);
            let (routes, accounts, providers) = (
                snap.config.routes.len(),
                snap.config.accounts.len(),
                snap.config.providers.len(),
            );
            // Installed before it is announced: whoever reads "reloaded" (an operator, a
            // test) and sends a request gets the new configuration.
            app.install(snap);
            app.metrics.config_reload(true);
            tracing::info!(routes, accounts, providers, "configuration reloaded");
            Ok(())
        }
        Err(e) => {
            match &e {
                ReloadError::Config(errs) => {
                    for err in &errs.0 {
                        tracing::error!(error = %err, "configuration error");
                    }
                }
                ReloadError::Compile(err) => tracing::error!(error = %err, "configuration error"),
            }
            tracing::error!("reload failed: the previous configuration stays in force");
            app.metrics.config_reload(false);
            Err(e)
        }
    }
}

fn warn_about_restart_only_settings(old: &config::Config, new: &config::Config) {
    let changed = old.listen != new.listen
        || old.admin_listen != new.admin_listen
        || old.tls.as_ref().map(|t| (&t.cert, &t.key))
            != new.tls.as_ref().map(|t| (&t.cert, &t.key))
        || old.limits.max_connections != new.limits.max_connections
        || old.limits.header_read_timeout != new.limits.header_read_timeout
        || old.limits.max_header_bytes != new.limits.max_header_bytes
        || old.limits.idle_timeout != new.limits.idle_timeout;
    if changed {
        tracing::warn!(
            "listen, admin_listen, [tls] and [limits] changes take effect after a restart"
        );
    }
}

/// Fingerprint of both files' bytes: file events that do not change them are ignored.
fn fingerprint(main: &Path, accounts: &Path) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in [main, accounts] {
        match std::fs::read(p) {
            Ok(b) => h.update(&b),
            Err(_) => h.update(b"\0missing\0"),
        }
        h.update(b"\0");
    }
    h.finalize().into()
}

fn dir_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Keeps the watcher and the reload task alive; dropping it stops both.
pub struct ReloadHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReloadHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts reloading on SIGHUP and on changes in the config directories. The SIGHUP handler
/// is installed before this returns; without a file watch (an error is logged) SIGHUP
/// still works. Must be called inside a tokio runtime.
pub fn spawn(app: Arc<App>) -> ReloadHandle {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !matches!(ev.kind, EventKind::Access(_))
        {
            // A full channel means a reload is already pending: nothing is lost.
            let _ = tx.try_send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "file watch unavailable: reload on SIGHUP only");
            None
        }
    };
    let mut watched: Vec<PathBuf> = Vec::new();
    let rewatch = |watcher: &mut Option<notify::RecommendedWatcher>,
                   watched: &mut Vec<PathBuf>,
                   cfg: &config::Config| {
        let Some(watcher) = watcher.as_mut() else {
            return;
        };
        let mut want = vec![dir_of(&cfg.main_file), dir_of(&cfg.accounts_file)];
        want.sort();
        want.dedup();
        for d in watched.iter().filter(|d| !want.contains(d)) {
            let _ = watcher.unwatch(d);
        }
        for d in want.iter().filter(|d| !watched.contains(d)) {
            if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %d.display(), error = %e, "cannot watch config directory");
            }
        }
        *watched = want;
    };
    let cfg = app.snapshot().config.clone();
    rewatch(&mut watcher, &mut watched, &cfg);
    let mut last = fingerprint(&cfg.main_file, &cfg.accounts_file);

    let task = tokio::spawn(async move {
        loop {
            let forced = tokio::select! {
                ev = rx.recv() => {
                    if ev.is_none() { return; }
                    false
                }
                Some(()) = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            if !forced {
                // Let a burst of events settle.
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
            }
            let cfg = app.snapshot().config.clone();
            let now = fingerprint(&cfg.main_file, &cfg.accounts_file);
            if !forced && now == last {
                continue;
            }
            if forced {
                tracing::info!("SIGHUP: reloading configuration");
            }
            // Reload reads files (blocking I/O, possibly large): keep it off the workers.
            let a = app.clone();
            let ok = tokio::task::spawn_blocking(move || reload_now(&a).is_ok())
                .await
                .unwrap_or(false);
            last = now;
            if ok {
                let cfg = app.snapshot().config.clone();
                rewatch(&mut watcher, &mut watched, &cfg);
                last = fingerprint(&cfg.main_file, &cfg.accounts_file);
            }
        }
    });
    ReloadHandle { task }
}
