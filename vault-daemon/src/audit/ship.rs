//! Shipping audit lines, once durable, to a second sink: syslog over TCP (RFC 6587 octet
//! counting), over TLS (RFC 5425), or a local Unix stream socket. Each line is one RFC 5424
//! message (`authpriv.info`, app `vaultd`, msgid `audit`) whose MSG is the stored line itself,
//! MAC and all, so the receiver holds a copy it can verify and order by sequence number.
//!
//! The primary log decides every call: an event is shipped only after it is fsynced in
//! `audit.log`, and a call fails closed when that write fails, whatever the sink does. The sink
//! can never stall the daemon: lines go through a bounded queue to a thread of their own; when
//! the queue is full (the sink down or slow) new lines are dropped and counted
//! ([`Shipper::dropped`], and a warning every 10 s while it lasts), and the thread reconnects
//! once a second. A line being written when the connection broke is sent again after the
//! reconnect, so the receiver may see a line twice (deduplicate by `seq`); lines dropped
//! while the queue was full are gaps the receiver sees in the sequence numbers, and
//! `audit.log` still has them.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// `[audit.ship]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShipConfig {
    /// `tcp://host:port`, `tls://host:port` or `unix:///path/to/socket`.
    pub to: String,
    /// CA certificate (PEM) that signs the receiver's certificate (`tls://`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Lines held while the sink is slow or down before new ones are dropped.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// The HOSTNAME field (default: `-`).
    #[serde(default)]
    pub hostname: Option<String>,
}

fn default_queue() -> usize {
    10_000
}

/// Where lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Tcp(String),
    Tls(String, String),
    Unix(PathBuf),
}

fn parse_target(to: &str) -> Result<Target, String> {
    if let Some(rest) = to.strip_prefix("tcp://") {
        Ok(Target::Tcp(rest.to_owned()))
    } else if let Some(rest) = to.strip_prefix("tls://") {
        let host = rest
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']).to_owned())
            .ok_or("tls:// needs host:port")?;
        Ok(Target::Tls(rest.to_owned(), host))
    } else if let Some(rest) = to.strip_prefix("unix://") {
        Ok(Target::Unix(PathBuf::from(rest)))
    } else {
        Err("audit.ship.to must start with tcp://, tls:// or unix://".into())
    }
}

/// What a connection is.
enum Conn {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Unix(std::os::unix::net::UnixStream),
}

impl Conn {
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(bytes).and_then(|()| s.flush()),
            Conn::Tls(s) => s.write_all(bytes).and_then(|()| s.flush()),
            Conn::Unix(s) => s.write_all(bytes).and_then(|()| s.flush()),
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(2);

/// The handle the writer ships through.
pub struct Shipper {
    tx: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
    shipped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper")
            .field("shipped", &self.shipped())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl Shipper {
    /// Checks the configuration and starts the shipping thread (it connects by itself).
    pub fn start(cfg: &ShipConfig) -> Result<Shipper, String> {
        let target = parse_target(&cfg.to)?;
        let tls = match &target {
            Target::Tls(..) => Some(Arc::new(tls_config(cfg.ca_file.as_ref())?)),
            _ => None,
        };
        let (tx, rx) = sync_channel(cfg.queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let shipped = Arc::new(AtomicU64::new(0));
        let thread = Thread {
            target,
            tls,
            hostname: cfg.hostname.clone().unwrap_or_else(|| "-".into()),
            shipped: Arc::clone(&shipped),
        };
        std::thread::Builder::new()
            .name("audit-ship".into())
            .spawn(move || thread.run(rx))
            .map_err(|e| e.to_string())?;
        Ok(Shipper {
            tx,
            dropped,
            shipped,
        })
    }

    /// Queues the lines of one durable batch (newline-separated); never blocks.
    pub(crate) fn ship(&self, lines: &[u8]) {
        for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match self.tx.try_send(line.to_vec()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Lines dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Lines the sink accepted.
    pub fn shipped(&self) -> u64 {
        self.shipped.load(Ordering::Relaxed)
    }
}

fn tls_config(ca: Option<&PathBuf>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let ca = ca.ok_or("tls:// needs audit.ship.ca_file")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        roots
            .add(cert.map_err(|e| format!("{}: {e}", ca.display()))?)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

struct Thread {
    target: Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    hostname: String,
    shipped: Arc<AtomicU64>,
}

impl Thread {
    fn connect(&self) -> std::io::Result<Conn> {
        let tcp = |addr: &str| -> std::io::Result<TcpStream> {
            let addr = addr
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| std::io::Error::other("no address"))?;
            let s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
            s.set_write_timeout(Some(TIMEOUT))?;
            s.set_nodelay(true)?;
            Ok(s)
        };
        Ok(match &self.target {
            Target::Tcp(addr) => Conn::Tcp(tcp(addr)?),
            Target::Tls(addr, host) => {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let config = self
                    .tls
                    .clone()
                    .ok_or_else(|| std::io::Error::other("no TLS configuration"))?;
                let conn = rustls::ClientConnection::new(config, name)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                Conn::Tls(Box::new(rustls::StreamOwned::new(conn, tcp(addr)?)))
            }
            Target::Unix(path) => {
                let s = std::os::unix::net::UnixStream::connect(path)?;
                s.set_write_timeout(Some(TIMEOUT))?;
                Conn::Unix(s)
            }
        })
    }

    /// One RFC 5424 message, framed by octet counting (RFC 6587 §3.4.1).
    fn frame(&self, line: &[u8]) -> Vec<u8> {
        let now = i64::try_from(super::now_ms()).unwrap_or(0);
        let head = format!(
            "<86>1 {} {} vaultd {} audit - ",
            crate::timefmt::rfc3339_millis(now),
            self.hostname,
            std::process::id()
        );
        let len = head.len() + line.len();
        let mut out = format!("{len} {head}").into_bytes();
        out.extend_from_slice(line);
        out
    }

    fn run(self, rx: Receiver<Vec<u8>>) {
        let mut conn: Option<Conn> = None;
        let mut warned = Instant::now() - Duration::from_secs(60);
        while let Ok(line) = rx.recv() {
            let framed = self.frame(&line);
            loop {
                if conn.is_none() {
                    match self.connect() {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            if warned.elapsed() >= Duration::from_secs(10) {
                                tracing::warn!(error = %e,
                                    "audit shipping: the sink is unreachable; retrying, and \
                                     dropping lines once the queue is full");
                                warned = Instant::now();
                            }
                            std::thread::sleep(Duration::from_secs(1));
                            continue;
                        }
                    }
                }
                match conn.as_mut().map(|c| c.send(&framed)) {
                    Some(Ok(())) => {
                        self.shipped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    _ => conn = None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_frames_count_octets() {
        assert_eq!(
            parse_target("tcp://127.0.0.1:6514"),
            Ok(Target::Tcp("127.0.0.1:6514".into()))
        );
        assert_eq!(
            parse_target("tls://logs.internal:6514"),
            Ok(Target::Tls(
                "logs.internal:6514".into(),
                "logs.internal".into()
            ))
        );
        assert!(parse_target("udp://x:1").is_err());
        let t = Thread {
            target: Target::Tcp("x:1".into()),
            tls: None,
            hostname: "h".into(),
            shipped: Arc::default(),
        };
        let f = t.frame(b"{\"seq\":1}");
        let text = String::from_utf8(f).unwrap();
        let (len, msg) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len());
        assert!(
            msg.starts_with("<86>1 ") && msg.ends_with("{\"seq\":1}"),
            "{msg}"
        );
    }
}
