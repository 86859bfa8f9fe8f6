//! The child-process crash tests (`runtime_crash`, `runtime_crash_items`,
//! ...): the parent's side, a child it spawns, talks to over stdin, reads
//! line by line, and SIGKILLs at a point the child reported; and the child's
//! side of that report, [`say`].
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The child's side: prints `line` and flushes it at once, for the parent
/// reads it as the child's report of a point it reached (a kill may follow).
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("flush");
}

/// One child: its process, its stdin and its stdout lines (read on a
/// thread, so a wait for them can give up and say what is missing).
pub struct Running {
    pub process: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, in order: a line printed before the one a
    /// wait looked for is not lost (a sink can report before `run <id>`).
    pub read: Vec<String>,
    pub round: usize,
    limit: Duration,
    deadline: Instant,
}

impl Running {
    /// Spawns `exe` with `env`; every wait for its lines gives up `limit`
    /// after the spawn. It bounds failures only: no kill waits on it.
    pub fn spawn(exe: &Path, env: &[(&str, OsString)], round: usize, limit: Duration) -> Running {
        let mut process = Command::new(exe)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdin = process.stdin.take().expect("child stdin");
        let stdout = process.stdout.take().expect("child stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Running {
            process,
            stdin,
            lines,
            read: Vec::new(),
            round,
            limit,
            deadline: Instant::now() + limit,
        }
    }

    /// Writes `line` to the child's stdin.
    pub fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to the child");
        self.stdin.flush().expect("flush the child's stdin");
    }

    /// The child's next line; panics saying what is `missing` if the child
    /// ends or the round's time is up first.
    fn next_line(&mut self, missing: &dyn std::fmt::Debug) -> String {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let line = match self.lines.recv_timeout(left) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!(
                "round {}: missing {missing:?} after {:?} (read: {:?})",
                self.round, self.limit, self.read
            ),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "round {}: the child ended before printing {missing:?} (read: {:?})",
                self.round, self.read
            ),
        };
        self.read.push(line.clone());
        line
    }

    /// Reads until a new line starting with `prefix`; the rest of it.
    pub fn expect(&mut self, prefix: &str) -> String {
        loop {
            let line = self.next_line(&format!("{prefix}..."));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    /// Reads until every one of `wanted` was printed (now or before).
    pub fn expect_all(&mut self, wanted: &[&str]) {
        let mut missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|w| !self.read.iter().any(|l| l == w))
            .collect();
        while !missing.is_empty() {
            let line = self.next_line(&missing);
            missing.retain(|w| *w != line);
        }
    }

    /// SIGKILLs the child and reaps it; every line it printed, those not
    /// read yet included (its stdout ends with it).
    pub fn kill(mut self) -> Vec<String> {
        self.process.kill().expect("SIGKILL child");
        self.process.wait().expect("reap child");
        self.read.extend(self.lines.iter());
        self.read
    }
}

/// The structured output of the one terminal event in a run's `log`, which
/// must say it completed.
pub fn completed_output(log: &[troupe::records::RunEvent]) -> serde_json::Value {
    use troupe::records::{EventKind, TerminalEvent};
    let terminals: Vec<_> = log
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Terminal(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(terminals.len(), 1, "one terminal event: {terminals:?}");
    let TerminalEvent::RunCompleted { structured_output } = &terminals[0] else {
        panic!("not completed: {terminals:?}");
    };
    structured_output.clone().unwrap_or_default()
}
