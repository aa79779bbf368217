//! The sandbox itself: isolation, limits, timeouts, output caps, and a clear error when bwrap
//! cannot run.

use atomrl::sandbox::{Exit, Job, Limits, Mount, Sandbox, SandboxConfig};
use std::time::{Duration, Instant};

fn sandbox(test: &str) -> Option<Sandbox> {
    match Sandbox::new(SandboxConfig::default()) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("SKIPPED {test}: bwrap cannot run here: {e:#}");
            None
        }
    }
}

fn sh(
    sb: &Sandbox,
    ws: &std::path::Path,
    script: &str,
    limits: &Limits,
) -> atomrl::sandbox::RunOutput {
    let argv = vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()];
    sb.run(&Job {
        workspace: ws,
        argv: &argv,
        env: &[],
        mounts: &[],
        limits,
    })
    .unwrap()
}

#[test]
fn runs_in_the_workspace_with_the_rest_read_only() {
    let Some(sb) = sandbox("read_only") else {
        return;
    };
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("in.txt"), "hello").unwrap();
    let out = sh(&sb, ws.path(), "pwd; cat in.txt; echo out > out.txt; touch /usr/x 2>/dev/null && echo BAD; ls /root /home 2>/dev/null | head -1; true", &Limits::default());
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    assert!(out.stdout.starts_with("/workspace\nhello"), "{out:?}");
    assert!(!out.stdout.contains("BAD"));
    assert_eq!(
        std::fs::read_to_string(ws.path().join("out.txt")).unwrap(),
        "out\n"
    );
}

#[test]
fn exit_codes_and_signals_are_reported() {
    let Some(sb) = sandbox("exit_codes") else {
        return;
    };
    let ws = tempfile::tempdir().unwrap();
    assert_eq!(
        sh(&sb, ws.path(), "exit 3", &Limits::default()).exit,
        Exit::Code(3)
    );
    // The command is the namespace's init (immune to its own signals): kill it from a child.
    let killed = sh(
        &sb,
        ws.path(),
        "sh -c 'kill -9 $PPID'; sleep 5",
        &Limits::default(),
    )
    .exit;
    assert!(
        matches!(killed, Exit::Signal(9) | Exit::Code(137)),
        "{killed:?}"
    );
}

#[test]
fn wall_clock_timeout_kills_the_whole_group() {
    let Some(sb) = sandbox("timeout") else { return };
    let ws = tempfile::tempdir().unwrap();
    let limits = Limits {
        time_s: 1.0,
        ..Limits::default()
    };
    let start = Instant::now();
    let out = sh(
        &sb,
        ws.path(),
        "(sleep 100; touch late) & sleep 100",
        &limits,
    );
    assert_eq!(out.exit, Exit::Timeout);
    assert!(start.elapsed() < Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!ws.path().join("late").exists());
}

#[test]
fn output_is_capped() {
    let Some(sb) = sandbox("output") else { return };
    let ws = tempfile::tempdir().unwrap();
    let limits = Limits {
        output_bytes: 1000,
        ..Limits::default()
    };
    let out = sh(&sb, ws.path(), "yes | head -c 100000000", &limits);
    assert!(out.truncated);
    assert!(out.stdout.len() <= 1000);
}

#[test]
fn file_size_and_process_limits_hold() {
    let Some(sb) = sandbox("limits") else { return };
    let ws = tempfile::tempdir().unwrap();
    let limits = Limits {
        file_mb: 1,
        procs: 16,
        time_s: 10.0,
        ..Limits::default()
    };
    let out = sh(
        &sb,
        ws.path(),
        "head -c 5000000 /dev/zero > big; ls -l big",
        &limits,
    );
    let size = std::fs::metadata(ws.path().join("big"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(size <= 1024 * 1024, "{size} {out:?}");
    // 40 background processes do not fit under 16: the shell cannot fork and gives up.
    let out = sh(
        &sb,
        ws.path(),
        "for i in $(seq 40); do sleep 2 & done; echo started; wait",
        &limits,
    );
    assert!(
        out.stderr.contains("fork") && !out.stdout.contains("started"),
        "{out:?}"
    );
    let out = sh(
        &sb,
        ws.path(),
        "for i in $(seq 5); do sleep 0.1 & done; wait; echo fine",
        &limits,
    );
    assert_eq!(out.stdout, "fine\n", "{out:?}");
}

#[test]
fn no_network_interfaces_but_loopback() {
    let Some(sb) = sandbox("network") else { return };
    let ws = tempfile::tempdir().unwrap();
    let out = sh(&sb, ws.path(), "cat /proc/net/dev", &Limits::default());
    let ifaces: Vec<&str> = out
        .stdout
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, vec!["lo"], "{out:?}");
}

#[test]
fn read_only_mounts_are_read_only() {
    let Some(sb) = sandbox("mounts") else { return };
    let ws = tempfile::tempdir().unwrap();
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("f"), "data").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        shared.path().join("f"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let mounts = vec![Mount {
        host: shared.path().into(),
        dest: "/opt/shared".into(),
        writable: false,
    }];
    let argv = vec![
        "/bin/sh".into(),
        "-c".into(),
        "cat /opt/shared/f; echo x > /opt/shared/f || echo denied".into(),
    ];
    let out = sb
        .run(&Job {
            workspace: ws.path(),
            argv: &argv,
            env: &[],
            mounts: &mounts,
            limits: &Limits::default(),
        })
        .unwrap();
    assert!(
        out.stdout.contains("data") && out.stdout.contains("denied"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(shared.path().join("f")).unwrap(),
        "data"
    );
}

#[test]
fn a_missing_bwrap_is_a_clear_error_unless_unsandboxed_is_allowed() {
    let cfg = SandboxConfig {
        bwrap: "/nonexistent/bwrap".into(),
        ..SandboxConfig::default()
    };
    let err = Sandbox::new(cfg.clone())
        .err()
        .expect("refuses to run unsandboxed");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("apt-get install bubblewrap") && msg.contains("allow_unsandboxed"),
        "{msg}"
    );
    let sb = Sandbox::new(SandboxConfig {
        allow_unsandboxed: true,
        ..cfg
    })
    .unwrap();
    assert!(!sb.is_sandboxed());
    let ws = tempfile::tempdir().unwrap();
    let out = sh(&sb, ws.path(), "echo hi > f; cat f", &Limits::default());
    assert_eq!(out.stdout, "hi\n");
    // Unsandboxed, a process can leave the group and keep the pipes open: the run still ends.
    let start = Instant::now();
    let out = sh(
        &sb,
        ws.path(),
        "setsid sleep 20 & echo started",
        &Limits::default(),
    );
    assert_eq!(out.stdout, "started\n");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn many_short_runs_do_not_exhaust_the_process_limit() {
    let Some(sb) = sandbox("many_runs") else {
        return;
    };
    let ws = tempfile::tempdir().unwrap();
    let limits = Limits {
        procs: 8,
        ..Limits::default()
    };
    for i in 0..80 {
        let out = sh(&sb, ws.path(), "true", &limits);
        assert_eq!(out.exit, Exit::Code(0), "run {i}: {out:?}");
    }
}
