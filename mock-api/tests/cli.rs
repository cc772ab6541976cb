//! `ingest-mock` as a program: `--help` lists every switch, the fault
//! switches among them, and a fault switch takes effect.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

#[test]
fn help_lists_the_switches_and_faults_work_by_hand() {
    let bin = env!("CARGO_BIN_EXE_ingest-mock");
    let out = Command::new(bin)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--port",
        "--posts",
        "--delay-ms",
        "--for",
        "--rough",
        "--rate-429",
        "--burst-5xx",
        "--truncate",
        "--reset",
        "--max-rps",
        "--broken",
    ] {
        assert!(help.contains(flag), "no {flag} in:\n{help}");
    }
    // every URL with "posts" broken: a 500 for a request made by hand
    let mut child = Command::new(bin)
        .args(["--port", "0", "--for", "10", "--broken", "posts"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut line = String::new();
    if let Some(o) = child.stdout.take() {
        let _ = BufReader::new(o).read_line(&mut line);
    }
    let url = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or("")
        .to_string();
    let mut stream = std::net::TcpStream::connect(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
    std::io::Write::write_all(
        &mut stream,
        b"GET /posts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let _ = child.kill();
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
}
