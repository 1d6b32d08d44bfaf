//! A throwaway PostgreSQL server started from the locally installed binaries.
//!
//! Used by the CLI and the test harness when no `DATABASE_URL` is given. The server lives in a
//! temporary directory, listens on a free port of 127.0.0.1 with trust authentication, and is
//! stopped and deleted when the owning process exits, even if that process crashes: a small
//! watchdog shell waits for the owner's pid to disappear. When running as root the server runs
//! as the `postgres` user, since PostgreSQL refuses to run as root.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why a throwaway server could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl) found. Install them, e.g. \
         `apt-get install postgresql` (Debian/Ubuntu), `dnf install postgresql-server` (Fedora), \
         `brew install postgresql@16` (macOS), or set PGSTRATA_PG_BINDIR to their folder; \
         or point DATABASE_URL at an existing server"
    )]
    NotInstalled,

    #[error(
        "running as root, and PostgreSQL refuses to run as root: create a `postgres` system user \
         (installing the postgresql package does) or set DATABASE_URL"
    )]
    NoPostgresUser,

    #[error("{step} failed: {detail}")]
    Command { step: &'static str, detail: String },

    #[error("i/o error while {step}: {source}")]
    Io {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A running throwaway server. Dropping it stops the server and deletes its files.
#[derive(Debug)]
pub struct ThrowawayServer {
    bin_dir: PathBuf,
    dir: PathBuf,
    run_as_postgres: bool,
    port: u16,
}

impl ThrowawayServer {
    /// Initialises and starts a new server. Blocks for the one or two seconds that takes.
    pub fn start() -> Result<Self, ServerError> {
        Self::start_with(&[])
    }

    /// Like [`ThrowawayServer::start`], with extra server settings given at start, such as
    /// `("shared_preload_libraries", "pg_cron")` (settings that only a start can change). Names
    /// and values are plain words: no spaces or quotes.
    pub fn start_with(settings: &[(&str, &str)]) -> Result<Self, ServerError> {
        let bin_dir = find_bin_dir().ok_or(ServerError::NotInstalled)?;
        Self::start_in(&bin_dir, settings)
    }

    /// Like [`ThrowawayServer::start_with`], with the server binaries of `bin_dir` (the folder
    /// holding `initdb` and `pg_ctl`): how one test runs against several major versions.
    pub fn start_in(bin_dir: &Path, settings: &[(&str, &str)]) -> Result<Self, ServerError> {
        if !(bin_dir.join("initdb").is_file() && bin_dir.join("pg_ctl").is_file()) {
            return Err(ServerError::NotInstalled);
        }
        let bin_dir = bin_dir.to_path_buf();
        if let Some((name, value)) = settings.iter().find(|(n, v)| {
            n.is_empty()
                || [n, v]
                    .iter()
                    .any(|s| s.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"'))
        }) {
            return Err(ServerError::Command {
                step: "checking server settings",
                detail: format!("setting {name:?} = {value:?} must be plain words"),
            });
        }
        let extra: String = settings.iter().map(|(n, v)| format!(" -c {n}={v}")).collect();
        let run_as_postgres = running_as_root();
        let owner = if run_as_postgres {
            Some(postgres_user().ok_or(ServerError::NoPostgresUser)?)
        } else {
            None
        };

        let dir = std::env::temp_dir().join(format!(
            "pgstrata-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).map_err(|source| ServerError::Io {
            step: "creating the data folder",
            source,
        })?;
        if let Some((uid, gid)) = owner {
            hand_to(&dir, uid, gid)?;
        }

        let mut server = ThrowawayServer {
            bin_dir,
            dir,
            run_as_postgres,
            port: 0,
        };
        let data = server.dir.join("data");
        server.run(
            "initdb",
            Command::new(server.bin_dir.join("initdb"))
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                    "-D",
                ])
                .arg(&data),
        )?;
        server.watchdog()?;

        // A free port can be taken between our probe and the server's bind; try a few.
        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off -c max_connections=200{extra}",
                server.dir.display()
            );
            let started = server.run(
                "pg_ctl start",
                Command::new(server.bin_dir.join("pg_ctl"))
                    .args(["-w", "-t", "60", "-D"])
                    .arg(&data)
                    .arg("-l")
                    .arg(server.dir.join("server.log"))
                    .args(["-o", &options, "start"]),
            );
            match started {
                Ok(()) => {
                    server.port = port;
                    return Ok(server);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ServerError::Command {
            step: "pg_ctl start",
            detail: "no attempt made".into(),
        }))
    }

    /// Connection URL for the `postgres` superuser and database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The folder holding the data directory and the server log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn command(&self, cmd: &mut Command) -> Command {
        let mut out = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(cmd.get_program())
                .args(cmd.get_args());
            c
        } else {
            let mut c = Command::new(cmd.get_program());
            c.args(cmd.get_args());
            c
        };
        out.stdin(Stdio::null());
        out
    }

    fn run(&self, step: &'static str, cmd: &mut Command) -> Result<(), ServerError> {
        let output = self
            .command(cmd)
            .output()
            .map_err(|source| ServerError::Io { step, source })?;
        if output.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        Err(ServerError::Command {
            step,
            detail: format!(
                "{}{}{}",
                String::from_utf8_lossy(&output.stderr).trim(),
                if log.is_empty() { "" } else { "\nserver log:\n" },
                log.lines()
                    .rev()
                    .take(10)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        })
    }

    /// Stops the server and removes its folder once this process is gone, however it ends.
    /// The watchdog runs as this process's user (it must be allowed to signal it); only
    /// `pg_ctl` runs as `postgres`.
    fn watchdog(&self) -> Result<(), ServerError> {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {as_postgres}{pg_ctl} -D {data} stop -m immediate >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            as_postgres = if self.run_as_postgres {
                "runuser -u postgres -- "
            } else {
                ""
            },
            pg_ctl = self.bin_dir.join("pg_ctl").display(),
            data = self.dir.join("data").display(),
            dir = self.dir.display(),
        );
        let mut watchdog = Command::new("sh");
        watchdog.args(["-c", &script]);
        // Its own process group, so a Ctrl-C aimed at the owner does not kill it first.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut watchdog, 0);
        watchdog
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|source| ServerError::Io {
                step: "starting the cleanup watchdog",
                source,
            })
    }
}

impl Drop for ThrowawayServer {
    fn drop(&mut self) {
        if self.port != 0 {
            let _ = self.run(
                "pg_ctl stop",
                Command::new(self.bin_dir.join("pg_ctl"))
                    .args(["-D"])
                    .arg(self.dir.join("data"))
                    .args(["stop", "-m", "immediate"]),
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The folder with `initdb` and `pg_ctl`: `PGSTRATA_PG_BINDIR`, else the newest Debian-style
/// `/usr/lib/postgresql/<v>/bin`, else `pg_config --bindir`, else `PATH`.
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PGSTRATA_PG_BINDIR").map(PathBuf::from) {
        return has_server(&dir).then_some(dir);
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, dir)| has_server(dir))
        .collect();
    debian.sort();
    if let Some((_, dir)) = debian.pop() {
        return Some(dir);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return Some(dir);
        }
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| has_server(dir))
}

/// Root may not run the server: it then runs as `postgres` (Unix only; elsewhere the server
/// runs as the current user).
#[cfg(unix)]
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

#[cfg(not(unix))]
fn running_as_root() -> bool {
    false
}

#[cfg(unix)]
fn hand_to(dir: &Path, uid: u32, gid: u32) -> Result<(), ServerError> {
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|source| ServerError::Io {
        step: "handing the data folder to postgres",
        source,
    })
}

#[cfg(not(unix))]
fn hand_to(_: &Path, _: u32, _: u32) -> Result<(), ServerError> {
    Ok(())
}

fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == "postgres").then_some(())?;
        let uid = f.nth(1)?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

fn free_port() -> Result<u16, ServerError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| ServerError::Io {
            step: "finding a free port",
            source,
        })
}
