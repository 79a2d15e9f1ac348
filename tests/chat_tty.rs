//! `glm-tune chat` as a person meets it: the real binary in a pseudo-terminal (made by
//! `tests/support/pty_drive.py` with Python's `pty` module; python3 is on every CI machine), keys
//! typed into the terminal, its output read back (polled with timeouts). Checks that an answer
//! appears incrementally while it is generated, that Ctrl-C stops a long generation and returns
//! to the prompt, that `/reset` and `/prefix off` work after it, that `/quit` leaves with status
//! 0, and that Ctrl-C at the prompt leaves with status 0.

#[path = "support/chat_model.rs"]
mod chat_model;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_model::{Shape, write_model, write_prefix};

/// One command running in a pseudo-terminal: what it printed so far, and its keyboard.
struct Terminal {
    child: Child,
    keyboard: ChildStdin,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    fn start(model: &Path, prefix: &Path) -> Terminal {
        let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/pty_drive.py");
        let mut child = Command::new("python3")
            .arg(&driver)
            .arg(env!("CARGO_BIN_EXE_glm-tune"))
            .args(["chat", "--model"])
            .arg(model)
            .arg("--prefix")
            .arg(prefix)
            .args(["--greedy", "--max-length", "1000000"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs tests/support/pty_drive.py");
        let keyboard = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            child,
            keyboard,
            output,
        }
    }

    /// Type raw bytes (`\x03` is Ctrl-C, `\r` is Enter).
    fn keys(&mut self, bytes: &[u8]) {
        self.keyboard.write_all(bytes).unwrap();
        self.keyboard.flush().unwrap();
    }

    fn type_line(&mut self, line: &str) {
        self.keys(line.as_bytes());
        self.keys(b"\r");
    }

    /// Everything the terminal showed so far (line ends as the terminal sends them, `\r\n`).
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).replace("\r\n", "\n")
    }

    /// `Some(status)` once glm-tune has exited (the driver prints `[exit N]`).
    fn exit_status(&self) -> Option<i32> {
        let s = self.screen();
        let i = s.rfind("[exit ")?;
        s[i + 6..].split(']').next()?.trim().parse().ok()
    }

    /// Poll the screen until `ok` holds (or fail with the screen after `secs`).
    fn wait_for(&self, what: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            if start.elapsed() > Duration::from_secs(secs) {
                panic!(
                    "timed out after {secs} s waiting for {what}; exit status {:?}; screen:\n{s}",
                    self.exit_status()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_exit(&self, secs: u64) -> i32 {
        self.wait_for("glm-tune to exit", secs, |s| s.contains("[exit "));
        self.exit_status().expect("an exit status")
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Text after the last `label` on the screen.
fn after_last<'a>(screen: &'a str, label: &str) -> Option<&'a str> {
    screen.rfind(label).map(|i| &screen[i + label.len()..])
}

/// Characters of the last answer on `screen`, up to its `[interrupted]` mark.
fn interrupted_answer_len(screen: &str) -> usize {
    after_last(screen, "ChatGLM：")
        .unwrap()
        .split("[interrupted]")
        .next()
        .unwrap()
        .trim()
        .chars()
        .count()
}

#[test]
fn chat_in_a_terminal_streams_stops_on_ctrl_c_and_keeps_going() {
    let tmp = tempfile::tempdir().unwrap();
    let model = write_model(
        &tmp.path().join("model"),
        Shape {
            hidden: 64,
            layers: 3,
            heads: 4,
            vocab: 1000,
        },
        3,
    );
    let prefix = write_prefix(&tmp.path().join("prefix"), &model, 4, false, 7);
    let mut t = Terminal::start(&model, &prefix);

    t.wait_for("the first prompt", 60, |s| {
        s.contains("/help lists the commands") && s.trim_end().ends_with("用户：")
    });
    t.type_line("hello");
    // The answer grows on screen while no new prompt has appeared: it is streamed.
    let first = t.wait_for("the answer to start", 30, |s| {
        after_last(s, "ChatGLM：").is_some_and(|a| a.trim().chars().count() >= 5)
    });
    let len_first = after_last(&first, "ChatGLM：")
        .unwrap()
        .trim()
        .chars()
        .count();
    let later = t.wait_for("the answer to grow", 30, |s| {
        after_last(s, "ChatGLM：")
            .is_some_and(|a| a.trim().chars().count() > len_first + 20 && !a.contains("用户："))
    });
    assert!(t.exit_status().is_none(), "still running:\n{later}");

    // Ctrl-C stops this (practically endless) answer and returns to the prompt.
    t.keys(b"\x03");
    let s = t.wait_for("[interrupted] and a new prompt", 30, |s| {
        after_last(s, "ChatGLM：")
            .is_some_and(|a| a.contains("[interrupted]") && a.trim_end().ends_with("用户："))
    });
    assert!(
        t.exit_status().is_none(),
        "Ctrl-C during an answer must not end the program:\n{s}"
    );
    let stopped = interrupted_answer_len(&s);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        interrupted_answer_len(&t.screen()),
        stopped,
        "nothing is generated after Ctrl-C"
    );

    t.type_line("/reset");
    t.wait_for("/reset", 30, |s| {
        s.contains("(history cleared") && s.trim_end().ends_with("用户：")
    });
    t.type_line("/prefix off");
    t.wait_for("/prefix off", 30, |s| {
        s.contains("(prefix off: the base model answers)") && s.trim_end().ends_with("用户：")
    });
    t.type_line("/quit");
    assert_eq!(
        t.wait_exit(30),
        0,
        "/quit exits with status 0:\n{}",
        t.screen()
    );
    drop(t);

    // Ctrl-C at the prompt leaves cleanly.
    let mut t = Terminal::start(&model, &prefix);
    t.wait_for("the first prompt", 60, |s| s.trim_end().ends_with("用户："));
    t.keys(b"\x03");
    assert_eq!(
        t.wait_exit(30),
        0,
        "Ctrl-C at the prompt exits with status 0:\n{}",
        t.screen()
    );
}
