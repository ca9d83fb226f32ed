//! Database backups for `GET /backup`, written to `<backup_dir>/YYYY-MM-DD/<db>-HHMMSS.sql`
//! (UTC) as Blnk does.
//!
//! - PostgreSQL: `pg_dump` (plain SQL) of the configured database. The password goes to
//!   `pg_dump` in `PGPASSWORD`, never on its command line; only libpq's own URL parameters are
//!   passed on. `pg_dump` must be at least the server's major version (`coffer.pg_dump`
//!   names the program).
//! - The embedded SQLite default: `VACUUM INTO` a `<db>-HHMMSS.db` copy.
//!
//! A dump is written to `<name>.partial` and renamed when complete, so a file without that
//! suffix is whole. One backup runs at a time per server; the dump runs to the end even if
//! the client hangs up. The day's directory is created `0700`, the file is made `0600`.

use crate::configuration::Settings;
use chrono::Utc;
use coffer_actors::store::Store;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// libpq URL parameters passed on to `pg_dump` (others, sqlx's own, are dropped).
const LIBPQ_PARAMETERS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "dbname",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "sslnegotiation",
    "application_name",
    "connect_timeout",
    "options",
    "target_session_attrs",
    "gssencmode",
    "channel_binding",
];

pub struct Backup {
    target: Target,
    dir: PathBuf,
    pg_dump: String,
    running: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Clone)]
enum Target {
    Postgres { url: String },
    Sqlite { store: Store, name: String },
}

impl Backup {
    pub fn new(settings: &Settings, store: Store) -> Self {
        let target = match &settings.database_url {
            Some(url) if !url.starts_with("sqlite:") => Target::Postgres { url: url.clone() },
            Some(url) => Target::Sqlite {
                store,
                name: file_stem(url.trim_start_matches("sqlite:").trim_start_matches("//")),
            },
            None => Target::Sqlite {
                store,
                name: file_stem(&settings.sqlite_url()["sqlite://".len()..]),
            },
        };
        Self {
            target,
            dir: settings.backup_dir.clone(),
            pg_dump: settings.pg_dump.clone(),
            running: Arc::default(),
        }
    }

    /// Writes one backup; returns its path. It runs as its own task: a client that hangs up
    /// does not stop it halfway.
    pub async fn run(&self) -> Result<PathBuf, String> {
        let one_at_a_time = self.running.clone().lock_owned().await;
        let (target, dir, pg_dump) = (self.target.clone(), self.dir.clone(), self.pg_dump.clone());
        actix_web::rt::spawn(async move {
            let _one_at_a_time = one_at_a_time;
            write(&target, &dir, &pg_dump).await
        })
        .await
        .map_err(|e| format!("backup task failed: {e}"))?
    }
}

async fn write(target: &Target, dir: &Path, pg_dump_program: &str) -> Result<PathBuf, String> {
    let now = Utc::now();
    let day = dir.join(now.format("%Y-%m-%d").to_string());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&day)
        .map_err(|e| format!("creating {}: {e}", day.display()))?;
    let (name, extension) = match target {
        Target::Postgres { url } => (database_name(url)?, "sql"),
        Target::Sqlite { name, .. } => (name.clone(), "db"),
    };
    let path = free_path(&day, &format!("{name}-{}", now.format("%H%M%S")), extension);
    let partial = path.with_extension(format!("{extension}.partial"));
    let written = match target {
        Target::Postgres { url } => {
            let (program, url, partial_path) =
                (pg_dump_program.to_owned(), url.clone(), partial.clone());
            tokio::task::spawn_blocking(move || pg_dump(&program, &url, &partial_path))
                .await
                .map_err(|e| format!("backup task failed: {e}"))?
        }
        Target::Sqlite { store, .. } => store
            .sqlite_backup_into(&partial)
            .await
            .map_err(|e| e.to_string()),
    };
    let finished = written.and_then(|()| {
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|e| format!("finishing {}: {e}", path.display()))
    });
    if let Err(error) = finished {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    Ok(path)
}

/// `<stem>.<extension>`, or `<stem>-N.<extension>` if taken (two backups in one second).
fn free_path(dir: &Path, stem: &str, extension: &str) -> PathBuf {
    let taken = |p: &Path| p.exists() || p.with_extension(format!("{extension}.partial")).exists();
    let first = dir.join(format!("{stem}.{extension}"));
    if !taken(&first) {
        return first;
    }
    (1..)
        .map(|n| dir.join(format!("{stem}-{n}.{extension}")))
        .find(|p| !taken(p))
        .expect("some suffix is free")
}

fn file_stem(path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    Path::new(path)
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("coffer")
        .to_owned()
}

fn database_name(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("bad database URL: {e}"))?;
    let from_path = parsed.path().trim_start_matches('/').to_owned();
    let from_query = parsed
        .query_pairs()
        .find(|(k, _)| k == "dbname")
        .map(|(_, v)| v.into_owned());
    let name = from_query
        .or(Some(from_path).filter(|n| !n.is_empty()))
        .unwrap_or_else(|| "postgres".to_owned());
    // The name becomes part of a file name.
    Ok(name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect())
}

/// The URL `pg_dump` gets (no password, libpq parameters only) and the password.
fn libpq_url(url: &str) -> Result<(String, Option<String>), String> {
    let mut parsed = url::Url::parse(url).map_err(|e| format!("bad database URL: {e}"))?;
    let password = parsed.password().map(percent_decode);
    parsed
        .set_password(None)
        .map_err(|()| "bad database URL".to_owned())?;
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| LIBPQ_PARAMETERS.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok((parsed.to_string(), password))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = || std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok();
        match (
            bytes[index],
            hex().and_then(|h| u8::from_str_radix(h, 16).ok()),
        ) {
            (b'%', Some(byte)) => {
                out.push(byte);
                index += 3;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn pg_dump(program: &str, url: &str, file: &Path) -> Result<(), String> {
    let (url, password) = libpq_url(url)?;
    let mut command = Command::new(program);
    command
        .arg("--no-password")
        .arg("--format=plain")
        .arg("--file")
        .arg(file)
        .arg("--dbname")
        .arg(&url)
        .env_remove("PGPASSWORD");
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output = command
        .output()
        .map_err(|e| format!("running {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!(
            "{program} failed ({}): {}",
            output.status,
            stderr.trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_leaves_the_url_and_sqlx_parameters_are_dropped() {
        let (url, password) = libpq_url(
            "postgres://app:p%40ss@db:5432/ledger?sslmode=require&statement-cache-capacity=0",
        )
        .unwrap();
        assert_eq!(url, "postgres://app@db:5432/ledger?sslmode=require");
        assert_eq!(password.as_deref(), Some("p@ss"));
        let (url, password) = libpq_url("postgres://postgres@127.0.0.1/x").unwrap();
        assert_eq!(url, "postgres://postgres@127.0.0.1/x");
        assert_eq!(password, None);
    }

    #[test]
    fn names_come_from_the_database() {
        assert_eq!(database_name("postgres://u@h/ledger").unwrap(), "ledger");
        assert_eq!(database_name("postgres://u@h/").unwrap(), "postgres");
        assert_eq!(database_name("postgres://u@h/a.b").unwrap(), "a_b");
        assert_eq!(file_stem("data/coffer.db"), "coffer");
        assert_eq!(file_stem("/x/y/ledger.sqlite?mode=rwc"), "ledger");
    }

    #[test]
    fn a_taken_name_gets_a_suffix() {
        let dir = std::env::temp_dir().join(format!("coffer-backup-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = free_path(&dir, "db-120000", "sql");
        assert_eq!(first, dir.join("db-120000.sql"));
        std::fs::write(&first, "x").unwrap();
        assert_eq!(
            free_path(&dir, "db-120000", "sql"),
            dir.join("db-120000-1.sql")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
