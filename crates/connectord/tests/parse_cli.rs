//! `connectord parse` as an operator runs it: a real process, real files and pipes.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/exposition")
}

fn connectord(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_connectord"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("connectord starts");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    pipe.write_all(stdin.unwrap_or_default())
        .expect("stdin takes the input");
    drop(pipe);
    child.wait_with_output().expect("connectord exits")
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("output is UTF-8")
}

#[test]
fn prints_the_golden_json_lines_for_a_real_fixture() {
    let input = fixtures().join("upstream-node_exporter.e2e-output.prom.txt");
    let out = connectord(&["parse", input.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let golden = std::fs::read_to_string(
        fixtures().join("upstream-node_exporter.e2e-output.prom.txt.golden"),
    )
    .unwrap();
    assert_eq!(text(&out.stdout), golden);
    let first: serde_json::Value = serde_json::from_str(golden.lines().next().unwrap()).unwrap();
    assert!(first["name"].is_string() && first["labels"].is_object());
}

#[test]
fn reads_standard_input_and_keeps_input_order() {
    let out = connectord(
        &["parse", "--format", "prometheus", "-"],
        Some(b"b{x=\"1\"} NaN\na 2 1700000000000\n"),
    );
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        "{\"name\":\"b\",\"labels\":{\"x\":\"1\"},\"value\":null,\"timestamp_ms\":null}\n\
         {\"name\":\"a\",\"labels\":{},\"value\":2.0,\"timestamp_ms\":1700000000000}\n"
    );
}

#[test]
fn count_prints_samples_and_bytes_only() {
    let input = fixtures().join("upstream-alltypes.237mfs.prom.txt");
    let out = connectord(&["parse", "--count", input.to_str().unwrap()], None);
    assert!(out.status.success());
    let size = std::fs::metadata(&input).unwrap().len();
    assert_eq!(text(&out.stdout), format!("samples=1857 bytes={size}\n"));
}

#[test]
fn a_parse_error_prints_nothing_on_stdout_and_one_line_on_stderr() {
    let out = connectord(
        &["parse", "-"],
        Some(b"ok 1\nok 2\nbroken{a=\"1\" 3\nok 4\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "stdout must stay empty: {}",
        text(&out.stdout)
    );
    assert_eq!(
        text(&out.stderr),
        "error: line 3, column 14 (byte 23): expected `,` or `}` after the label value, found `3`\n"
    );
    let out = connectord(&["parse", "--count", "-"], Some(b"ok 1\n<html>\n"));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

#[test]
fn format_flag_forces_openmetrics_framing() {
    let out = connectord(&["parse", "--format", "openmetrics", "-"], Some(b"a 1\n"));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("error: line 2, column 1 (byte 4): missing `# EOF`"));
    let out = connectord(
        &["parse", "--format", "openmetrics", "-"],
        Some(b"a 1 2.5\n# EOF"),
    );
    assert!(out.status.success());
    assert!(text(&out.stdout).ends_with("\"timestamp_ms\":2500}\n"));
}

#[test]
fn invalid_utf8_is_a_parse_error_with_a_position() {
    let out = connectord(&["parse", "-"], Some(b"a 1\nb{x=\"\xff\"} 2\n"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: line 2, column 6 (byte 9): invalid UTF-8: exposition text must be UTF-8\n"
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(connectord(&["parse"], None).status.code(), Some(2));
    assert_eq!(
        connectord(&["parse", "--format", "xml", "-"], None)
            .status
            .code(),
        Some(2)
    );
    let out = connectord(&["parse", "/nonexistent/metrics.txt"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("error: cannot read `/nonexistent/metrics.txt`"));
}

#[test]
fn strict_parse_agrees_with_every_conformance_case() {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/openmetrics");
    if !dir.is_dir() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must have ../shared"
        );
        return;
    }
    let (mut good, mut bad) = (0, 0);
    let mut wrong = Vec::new();
    for case in std::fs::read_dir(&dir).unwrap() {
        let case = case.unwrap().path();
        let spec = std::fs::read_to_string(case.join("test.json")).unwrap();
        let should_parse = spec.contains("\"shouldParse\": true");
        let metrics = case.join("metrics");
        let run = |strict: bool| {
            let mut args = vec!["parse", "--format", "openmetrics", "--count"];
            if strict {
                args.push("--strict");
            }
            args.push(metrics.to_str().unwrap());
            connectord(&args, None)
        };
        let out = run(true);
        match (should_parse, out.status.code()) {
            (true, Some(0)) => good += 1,
            (false, Some(1)) => {
                assert!(
                    text(&out.stderr).starts_with("error: line "),
                    "{}",
                    case.display()
                );
                bad += 1;
            }
            (_, code) => wrong.push(format!(
                "{}: exit {code:?}: {}",
                case.display(),
                text(&out.stderr)
            )),
        }
        // Lenient mode parses every good case as well.
        if should_parse {
            assert!(run(false).status.success(), "{}", case.display());
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!((good, bad), (44, 167));
}

/// Large files are mapped and parsed in parts on every core: the output must be
/// byte for byte what standard input (one piece) gives, and an error in a late part
/// must name its line in the file.
#[test]
fn a_large_file_parses_in_parts_to_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let line = "kube_pod_info{namespace=\"a\",pod=\"p\\\"q\"} 1.5 1700000000000\n";
    let body = line.repeat(5 * 1024 * 1024 / line.len());
    let path = dir.path().join("big.prom");
    std::fs::write(&path, &body).unwrap();
    let mapped = connectord(&["parse", path.to_str().unwrap()], None);
    assert!(mapped.status.success(), "{}", text(&mapped.stderr));
    let piped = connectord(&["parse", "-"], Some(body.as_bytes()));
    assert!(piped.status.success());
    assert_eq!(mapped.stdout, piped.stdout);
    assert_eq!(
        text(&mapped.stdout).lines().count(),
        body.len() / line.len()
    );

    let broken = format!("{body}m{{ 1\n");
    std::fs::write(&path, &broken).unwrap();
    let out = connectord(&["parse", "--count", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let line_no = body.len() / line.len() + 1;
    assert!(
        text(&out.stderr).starts_with(&format!("error: line {line_no},")),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_device_is_refused_and_a_pipe_is_read() {
    let out = connectord(&["parse", "/dev/zero"], None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: cannot read `/dev/zero`: not a regular file or a pipe\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("in.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(fifo, "up 1\n").unwrap())
    };
    let out = connectord(&["parse", "--count", fifo.to_str().unwrap()], None);
    writer.join().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "samples=1 bytes=5\n");
}
