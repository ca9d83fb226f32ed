//! A local relay that gives every PostgreSQL connection `TCP_NODELAY`.
//!
//! sqlx 0.9.0 opens its TCP sockets without `TCP_NODELAY` (a regression: sqlx#4335, fixed
//! upstream by sqlx#4336 but not released). A statement larger than the socket's send buffer
//! (a group commit's multi-row insert, a 1,000-id lock) then leaves its last small segment
//! waiting on the server's delayed ACK: a 40 ms stall per statement, measured at ~200 ms per
//! 1,000-transfer commit. sqlx offers no hook onto its socket and Coffer forbids `unsafe`, so
//! the pool connects to a private Unix socket instead, and this relay carries each
//! connection to PostgreSQL over a TCP socket that has `TCP_NODELAY` set. The relay only
//! copies bytes: TLS, authentication and errors are still between sqlx and the server.
//! Remove it once a sqlx release sets `TCP_NODELAY` again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::{TcpStream, UnixListener, UnixStream};

/// Bytes buffered in each direction of a relayed connection (a commit's insert is ~200 KB;
/// larger buffers mean fewer system calls per statement).
const RELAY_BUFFER_BYTES: usize = 64 * 1024;

/// Counts of what the relay did, for tests and diagnosis.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Connections carried to the server with `TCP_NODELAY` set on the server side.
    pub connections_nodelay: AtomicU64,
    /// Connections the server side could not be opened for (sqlx sees them closed).
    pub connections_failed: AtomicU64,
}

/// The running relay: its socket lives in a private directory, removed on drop.
#[derive(Debug)]
pub struct NodelayRelay {
    directory: PathBuf,
    socket: PathBuf,
    stats: Arc<RelayStats>,
    task: tokio::task::JoinHandle<()>,
}

impl NodelayRelay {
    /// Listens on a new Unix socket and relays every connection to `host:port`. Must be called
    /// on the runtime that will carry the connections.
    pub fn start(host: String, port: u16) -> std::io::Result<Self> {
        let directory = private_directory()?;
        // sqlx takes a directory and connects to the file PostgreSQL would name in it.
        let socket = directory.join(format!(".s.PGSQL.{port}"));
        let listener = UnixListener::bind(&socket)?;
        let stats = Arc::new(RelayStats::default());
        let task = tokio::spawn(accept_loop(listener, host, port, stats.clone()));
        Ok(Self {
            directory,
            socket,
            stats,
            task,
        })
    }

    /// The directory to give sqlx as its socket (it adds `.s.PGSQL.<port>`).
    pub fn socket_directory(&self) -> &Path {
        &self.directory
    }

    pub fn stats(&self) -> &Arc<RelayStats> {
        &self.stats
    }
}

impl Drop for NodelayRelay {
    fn drop(&mut self) {
        self.task.abort();
        std::fs::remove_file(&self.socket).ok();
        std::fs::remove_dir(&self.directory).ok();
    }
}

/// Prefix of the relay directories in the temporary directory: `coffer-pg-<pid>-<n>`.
const DIRECTORY_PREFIX: &str = "coffer-pg-";

/// A new directory only this user can enter (the socket inside inherits that protection).
fn private_directory() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    remove_orphans();
    let directory = std::env::temp_dir().join(format!(
        "{DIRECTORY_PREFIX}{}-{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&directory)?;
    Ok(directory)
}

/// Removes the relay directories of processes that are gone (killed before their drop ran).
fn remove_orphans() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(DIRECTORY_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            std::fs::remove_dir_all(entry.path()).ok();
        }
    }
}

async fn accept_loop(listener: UnixListener, host: String, port: u16, stats: Arc<RelayStats>) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(relay(client, host.clone(), port, stats.clone()));
            }
            Err(error) => {
                // Out of file descriptors and the like: sqlx's connect times out and retries.
                tracing::warn!(%error, "database relay: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn relay(mut client: UnixStream, host: String, port: u16, stats: Arc<RelayStats>) {
    let mut server = match TcpStream::connect((host.as_str(), port)).await {
        Ok(server) => server,
        Err(error) => {
            stats.connections_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, %host, port, "database relay: cannot connect to PostgreSQL");
            return;
        }
    };
    match server.set_nodelay(true) {
        Ok(()) => {
            stats.connections_nodelay.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => tracing::warn!(%error, "database relay: TCP_NODELAY refused"),
    }
    // Either side closing ends the connection; the other side then sees it closed.
    tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut server,
        RELAY_BUFFER_BYTES,
        RELAY_BUFFER_BYTES,
    )
    .await
    .ok();
}
