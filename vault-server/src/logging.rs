//! The server's log: JSON lines on stdout and in the log file (`VAULT_LOG_FILE`, rotated
//! by size; what `/vault/system/logs` reads), written by a thread of their own so no request
//! ever waits on a slow terminal, pipe, journal or disk. Request lines come pre-serialized from
//! the audit trail; everything else is formatted by `tracing`. Both go through the same
//! queue, one whole line per message, so lines never interleave.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use vault_core::VaultError;
use vault_core::config::{Config, VAULT_LOG_FILE, VAULT_LOG_LEVEL};
use vault_core::logs::RotatingFile;

/// Lines queued beyond this are dropped (and counted) rather than held in memory: the
/// audit rows keep the record, the log is a copy for operators.
const QUEUE_LINES: usize = 65_536;
/// While lines come, the writer wakes this often and writes what queued meanwhile: waking
/// it for every line would cost a thread switch per request. When none came in a round, it
/// sleeps until the next one arrives, so an idle gateway does not wake it at all.
const WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(5);

enum Message {
    Line(Vec<u8>),
    Flush(mpsc::SyncSender<()>),
}

/// The writing end of the log: cheap to clone. It never blocks for ordinary lines; an
/// ERROR line (an audit row kept only in the log, say) waits for room rather than be lost.
#[derive(Clone)]
pub struct LogWriter {
    queue: mpsc::SyncSender<Message>,
    dropped: Arc<AtomicU64>,
    must_keep: bool,
}

impl LogWriter {
    /// Starts the thread that writes lines to `out`.
    pub fn start(out: impl Write + Send + 'static) -> LogWriter {
        let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        let spawned = std::thread::Builder::new().name("vault-log".into()).spawn(move || {
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
            write_lines(&lines, &mut out, &counted);
        });
        if let Err(err) = spawned {
            // Without the thread every line is counted as dropped; serving goes on.
            let _ = writeln!(std::io::stderr(), "vault-server: cannot start the log writer: {err}");
        }
        LogWriter { queue, dropped, must_keep: false }
    }

    fn send_line(&self, line: Vec<u8>) {
        let sent = if self.must_keep {
            self.queue.send(Message::Line(line)).is_ok()
        } else {
            self.queue.try_send(Message::Line(line)).is_ok()
        };
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits (a few seconds at most, should the output be stuck) until every line queued
    /// so far is written out.
    pub fn flush(&self) {
        let (done, flushed) = mpsc::sync_channel(1);
        if self.queue.send(Message::Flush(done)).is_ok() {
            let _ = flushed.recv_timeout(std::time::Duration::from_secs(5));
        }
    }
}

fn write_lines(lines: &mpsc::Receiver<Message>, out: &mut impl Write, dropped: &AtomicU64) {
    let mut quiet = false;
    loop {
        if quiet {
            // Nothing came last round: wait for the next line instead of looking again.
            match lines.recv() {
                Ok(message) => write_message(message, out),
                Err(mpsc::RecvError) => return,
            }
        }
        std::thread::sleep(WRITE_INTERVAL);
        // Write everything queued, then flush once.
        quiet = true;
        loop {
            match lines.try_recv() {
                Ok(message) => {
                    quiet = false;
                    write_message(message, out);
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(
                out,
                r#"{{"level":"WARN","message":"log lines dropped: the log could not keep up","dropped":{lost}}}"#
            );
        }
        let _ = out.flush();
    }
}

fn write_message(message: Message, out: &mut impl Write) {
    match message {
        Message::Line(line) => {
            let _ = out.write_all(&line);
        }
        Message::Flush(done) => {
            let _ = out.flush();
            let _ = done.send(());
        }
    }
}

impl vault_core::audit::LineSink for LogWriter {
    fn write_line(&self, line: Vec<u8>) {
        self.send_line(line);
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.send_line(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        self.clone()
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LogWriter {
        LogWriter { must_keep: *meta.level() == tracing::Level::ERROR, ..self.clone() }
    }
}

/// Stdout and, when there is one, the log file: each line goes to both.
struct Outputs<S> {
    stdout: S,
    file: Option<RotatingFile>,
}

impl<S: Write> Write for Outputs<S> {
    /// Always takes the whole line: one failing output (a full disk, a closed pipe) loses
    /// its copy of it, and neither silences the other nor makes it write the line again.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.stdout.write_all(buf);
        if let Some(file) = self.file.as_mut() {
            let _ = file.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.stdout.flush();
        if let Some(file) = self.file.as_mut() {
            let _ = file.flush();
        }
        Ok(())
    }
}

/// Sets up the process's log at the configured level, on stdout and in the log file;
/// returns the writer, to flush it before the process exits.
pub fn init(config: &Config) -> Result<LogWriter, VaultError> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .map_err(|e| VaultError::config(format!("{VAULT_LOG_LEVEL}: {e}")))?;
    let file = match &config.log_file {
        Some(path) => Some(RotatingFile::open(path, config.log_max_bytes).map_err(|e| {
            VaultError::config(format!("{VAULT_LOG_FILE}: cannot write the log file {}: {e}", path.display()))
        })?),
        None => None,
    };
    let writer = LogWriter::start(Outputs { stdout: std::io::stdout(), file });
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(writer.clone())
        .try_init()
        .map_err(|e| VaultError::internal("starting the log", e))?;
    vault_core::audit::install_line_sink(Box::new(writer.clone()));
    Ok(writer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_from_many_threads_come_out_whole_and_in_order_per_thread() {
        let out = Captured::default();
        let log = LogWriter::start(out.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        log.send_line(format!("{{\"t\":{t},\"i\":{i}}}\n").into_bytes());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        log.flush();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut next = [0u64; 4];
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let t = v["t"].as_u64().unwrap() as usize;
            assert_eq!(v["i"].as_u64().unwrap(), next[t]);
            next[t] += 1;
        }
        assert_eq!(next, [1000; 4]);
    }

    /// Counts the rounds of the writer: each one ends with a flush.
    #[derive(Clone, Default)]
    struct Rounds(Captured, Arc<AtomicU64>);

    impl Write for Rounds {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(buf)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            self.1.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn an_idle_writer_sleeps_until_the_next_line_and_writes_it_promptly() {
        let out = Rounds::default();
        let log = LogWriter::start(out.clone());
        log.send_line(b"first\n".to_vec());
        // Its round, and the next one that finds nothing, are over well within this.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let rounds = out.1.load(Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(out.1.load(Ordering::SeqCst), rounds, "an idle writer kept waking");
        log.send_line(b"second\n".to_vec());
        let sent = std::time::Instant::now();
        while !String::from_utf8_lossy(&out.0.0.lock().unwrap()).contains("second")
            || out.1.load(Ordering::SeqCst) == rounds
        {
            assert!(sent.elapsed() < std::time::Duration::from_millis(500), "a line after a quiet spell was held");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(String::from_utf8_lossy(&out.0.0.lock().unwrap()), "first\nsecond\n");
    }

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("pipe closed"))
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::Error::other("pipe closed"))
        }
    }

    #[test]
    fn a_broken_output_neither_silences_the_other_nor_repeats_lines_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.log");
        let file = RotatingFile::open(&path, 1 << 20).unwrap();
        let log = LogWriter::start(Outputs { stdout: Broken, file: Some(file) });
        for i in 0..100 {
            log.send_line(format!("{{\"i\":{i}}}\n").into_bytes());
        }
        log.flush();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 100, "each line once");
    }
}
