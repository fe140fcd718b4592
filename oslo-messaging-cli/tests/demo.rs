//! The `demo` subcommand, run as a user would run it.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_oslo-messaging"))
}

#[test]
fn demo_runs_every_step_and_exits_zero() {
    let out = bin().arg("demo").output().expect("run the binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for needle in [
        "calc.add(a=2, b=3) -> 5",
        "host-2 recorded \"disk\"",
        "host-1 refreshed; host-2 refreshed",
        "remote builtins.ValueError: division by zero",
        "Timed out waiting for a reply to message ID ",
        "INFO compute.instance.create.end from compute.host-1",
        "ERROR compute.instance.error from compute.host-1",
        "(auth_token in context: null)",
        "done.",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    assert!(!stderr.contains("ERROR"), "no errors logged:\n{stderr}");
}

#[test]
fn demo_rejects_an_unknown_scheme_clearly() {
    let out = bin()
        .args(["demo", "--url", "amqp1://u:pw@h/"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "bad usage");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown transport driver \"amqp1\""),
        "{stderr}"
    );
    assert!(!stderr.contains("pw"), "no password in errors: {stderr}");
}

#[test]
fn help_lists_the_demo() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("demo"));
}
