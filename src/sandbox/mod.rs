//! Running untrusted code: model completions, and the tests and packages they touch.
//!
//! Every command runs under bubblewrap (`bwrap`) with all namespaces unshared: a private user,
//! mount, PID, network, IPC, UTS and cgroup namespace. Inside, the root file system is a fresh
//! tmpfs holding only read-only binds of the system directories (`/usr`, `/lib*`, `/bin`, a few
//! files of `/etc`), the read-only mounts the caller asks for (the Python dependencies, the
//! grading harness), a private `/tmp`, and the workspace, the only host directory bound
//! read-write. When the process runs as root it first drops to an unprivileged uid that no other
//! run is using (and that was not used recently), so that the process limit counts only that run's
//! processes. The command is the PID namespace's init (`--as-pid-1`). rlimits cap CPU
//! seconds, address space, processes, file size and open files; a wall-clock timeout kills the
//! whole process group (and with it the PID namespace); captured output is capped, and a writer
//! past the cap gets a broken pipe.
//!
//! What it protects against: network access (there is no interface but loopback); reading or
//! writing host files outside the workspace (home directories, the repository, the source cache
//! are simply not there); fork bombs (RLIMIT_NPROC per run); runaway memory (RLIMIT_AS); infinite
//! loops (RLIMIT_CPU and the wall clock); huge outputs and huge files (the output cap and
//! RLIMIT_FSIZE); processes that outlive their run (PID namespace, `--die-with-parent`).
//!
//! What it does not protect against: kernel exploits and bwrap bugs (this is namespaces and
//! rlimits, not a VM); filling memory through many files on the in-sandbox tmpfs or filling the
//! disk through many files in the workspace, each under RLIMIT_FSIZE (there is no cgroup quota);
//! CPU contention between concurrent runs; code that, inside the same Python interpreter as the
//! test harness, inspects the harness to forge its report (the report carries a per-run nonce that
//! is removed from the environment before any tested code is imported, which stops casual forgery
//! only). If bwrap cannot create its namespaces, `Sandbox::new` fails with instructions instead of
//! running anything unsandboxed, unless `allow_unsandboxed` is set, in which case commands run
//! with only the rlimits and the timeout.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

mod copy;
pub use copy::copy_tree;

/// Where the workspace appears inside the sandbox.
pub const WORKSPACE: &str = "/workspace";

/// Resource limits for one run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Wall-clock limit in seconds; past it the whole process group is killed.
    pub time_s: f64,
    /// CPU seconds per process (RLIMIT_CPU).
    pub cpu_s: u64,
    /// Address space per process in MiB (RLIMIT_AS).
    pub memory_mb: u64,
    /// Processes (RLIMIT_NPROC), counted for this run only.
    pub procs: u64,
    /// Largest file a process may write, in MiB (RLIMIT_FSIZE).
    pub file_mb: u64,
    /// Open file descriptors per process (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Bytes of stdout and of stderr kept; a writer past this gets a broken pipe.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            time_s: 30.0,
            cpu_s: 30,
            memory_mb: 2048,
            procs: 64,
            file_mb: 64,
            open_files: 256,
            output_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The bwrap binary.
    pub bwrap: PathBuf,
    /// Run without namespaces (rlimits and timeout only) when bwrap cannot work. Off by default.
    pub allow_unsandboxed: bool,
    /// First uid of the range used when running as root: `UIDS_PER_PROCESS` uids, one per run,
    /// rotated so that a uid is not reused while the host's init may still be reaping what its
    /// last run left behind.
    pub uid_base: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            bwrap: PathBuf::from("bwrap"),
            allow_unsandboxed: false,
            uid_base: 200_000 + (std::process::id() % 256) * UIDS_PER_PROCESS,
        }
    }
}

/// A host path made visible inside the sandbox.
#[derive(Debug, Clone)]
pub struct Mount {
    pub host: PathBuf,
    pub dest: PathBuf,
    pub writable: bool,
}

/// One command to run.
pub struct Job<'a> {
    /// Host directory bound read-write at [`WORKSPACE`]; it becomes the working directory.
    pub workspace: &'a Path,
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub mounts: &'a [Mount],
    pub limits: &'a Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    Timeout,
}

#[derive(Debug, Clone)]
pub struct RunOutput {
    pub exit: Exit,
    pub stdout: String,
    pub stderr: String,
    /// Some output was cut at `Limits::output_bytes`.
    pub truncated: bool,
    pub wall: Duration,
}

impl RunOutput {
    pub fn success(&self) -> bool {
        self.exit == Exit::Code(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bwrap,
    Unsandboxed,
}

pub struct Sandbox {
    cfg: SandboxConfig,
    mode: Mode,
    is_root: bool,
}

const MAX_SLOTS: usize = 64;
/// Uids per slot, used in turn.
const UIDS_PER_SLOT: u32 = 64;
pub const UIDS_PER_PROCESS: u32 = MAX_SLOTS as u32 * UIDS_PER_SLOT;
static SLOT_USES: [std::sync::atomic::AtomicU32; MAX_SLOTS] =
    [const { std::sync::atomic::AtomicU32::new(0) }; MAX_SLOTS];
static SLOTS: Mutex<u64> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

/// One of `MAX_SLOTS` concurrent-run slots; each maps to its own uid when running as root.
struct Slot(usize);

impl Slot {
    fn take() -> Slot {
        let mut used = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(i) = (0..MAX_SLOTS).find(|i| *used & (1u64 << i) == 0) {
                *used |= 1u64 << i;
                return Slot(i);
            }
            used = SLOT_FREED.wait(used).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut used = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        *used &= !(1u64 << self.0);
        SLOT_FREED.notify_one();
    }
}

const SYSTEM_RO: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/lib32",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/alternatives",
];

impl Sandbox {
    /// Checks that bwrap can create its namespaces here; fails with how to fix it otherwise.
    pub fn new(cfg: SandboxConfig) -> Result<Sandbox> {
        let is_root = unsafe { libc::geteuid() } == 0;
        let mut sb = Sandbox {
            cfg,
            mode: Mode::Bwrap,
            is_root,
        };
        match sb.probe() {
            Ok(()) => Ok(sb),
            Err(err) if sb.cfg.allow_unsandboxed => {
                eprintln!("warning: running untrusted code WITHOUT a sandbox (allow_unsandboxed): {err:#}");
                sb.mode = Mode::Unsandboxed;
                Ok(sb)
            }
            Err(err) => Err(err.context(
                "bubblewrap cannot create a sandbox on this machine. Fixes: install it \
                 (`apt-get install bubblewrap`, or run scripts/install-sandbox-deps.sh); allow \
                 unprivileged user namespaces (`sysctl -w kernel.unprivileged_userns_clone=1`, \
                 `sysctl -w user.max_user_namespaces=15000`, on Ubuntu 24.04 also \
                 `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`); inside Docker run \
                 the container with `--security-opt seccomp=unconfined --security-opt \
                 apparmor=unconfined` or `--privileged`. To run without isolation anyway (trusted \
                 code only), set allow_unsandboxed.",
            )),
        }
    }

    pub fn is_sandboxed(&self) -> bool {
        self.mode == Mode::Bwrap
    }

    /// The path a command should use for `host`, mounted at `dest`.
    pub fn path_in<'a>(&self, mount: &'a Mount) -> &'a Path {
        match self.mode {
            Mode::Bwrap => &mount.dest,
            Mode::Unsandboxed => &mount.host,
        }
    }

    /// The path of the workspace as the command sees it.
    pub fn workspace_in(&self, host_workspace: &Path) -> PathBuf {
        match self.mode {
            Mode::Bwrap => PathBuf::from(WORKSPACE),
            Mode::Unsandboxed => host_workspace.to_path_buf(),
        }
    }

    fn probe(&self) -> Result<()> {
        let dir = tempfile::tempdir().context("creating a probe workspace")?;
        let argv = vec!["true".to_string()];
        let limits = Limits {
            time_s: 20.0,
            ..Limits::default()
        };
        let job = Job {
            workspace: dir.path(),
            argv: &argv,
            env: &[],
            mounts: &[],
            limits: &limits,
        };
        let out = self.run(&job)?;
        if !out.success() {
            bail!(
                "`bwrap ... true` failed ({:?}): {}",
                out.exit,
                out.stderr.trim()
            );
        }
        Ok(())
    }

    /// Runs one command. Errors are infrastructure failures (spawning, the workspace); whatever
    /// the command itself does is reported in `RunOutput`.
    pub fn run(&self, job: &Job) -> Result<RunOutput> {
        let slot = Slot::take();
        let turn =
            SLOT_USES[slot.0].fetch_add(1, std::sync::atomic::Ordering::Relaxed) % UIDS_PER_SLOT;
        let uid = self.cfg.uid_base + slot.0 as u32 * UIDS_PER_SLOT + turn;
        let drop_to = if self.is_root && self.mode == Mode::Bwrap {
            Some(uid)
        } else {
            None
        };
        if let Some(uid) = drop_to {
            chown_tree(job.workspace, uid).context("handing the workspace to the sandbox uid")?;
            for m in job.mounts.iter().filter(|m| m.writable) {
                chown_tree(&m.host, uid).context("handing a writable mount to the sandbox uid")?;
            }
        }
        let mut cmd = match self.mode {
            Mode::Bwrap => self.bwrap_command(job),
            Mode::Unsandboxed => {
                let mut c = Command::new(&job.argv[0]);
                c.args(&job.argv[1..]).current_dir(job.workspace);
                c
            }
        };
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", "/tmp")
            .env("USER", "sandbox")
            .env("LANG", "C.UTF-8")
            .envs(job.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let limits = job.limits.clone();
        unsafe {
            cmd.pre_exec(move || apply_limits(&limits, drop_to));
        }
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
        let pgid = child.id() as i32;
        let cap = job.limits.output_bytes;
        let out_reader = spawn_capped_reader(child.stdout.take(), cap);
        let err_reader = spawn_capped_reader(child.stderr.take(), cap);

        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let wall = Duration::from_secs_f64(job.limits.time_s.max(0.001));
        let killer = std::thread::spawn(move || {
            if done_rx.recv_timeout(wall).is_err() {
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                return true;
            }
            false
        });
        let status = child.wait().context("waiting for the sandboxed command")?;
        let _ = done_tx.send(());
        let timed_out = killer.join().unwrap_or(false);
        // Anything left in the group (only possible unsandboxed) goes too.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        // A process that escaped the group (possible only unsandboxed) may hold the pipes open:
        // take what was read by then and leave its reader behind.
        let (stdout, t1) = out_reader.finish(Duration::from_secs(2));
        let (stderr, t2) = err_reader.finish(Duration::from_secs(2));
        let elapsed = start.elapsed();
        use std::os::unix::process::ExitStatusExt;
        let exit = if timed_out {
            Exit::Timeout
        } else if let Some(code) = status.code() {
            Exit::Code(code)
        } else {
            Exit::Signal(status.signal().unwrap_or(0))
        };
        drop(slot);
        Ok(RunOutput {
            exit,
            stdout,
            stderr,
            truncated: t1 || t2,
            wall: elapsed,
        })
    }

    fn bwrap_command(&self, job: &Job) -> Command {
        let mut c = Command::new(&self.cfg.bwrap);
        c.args([
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
        ]);
        c.args(["--hostname", "sandbox"]);
        for p in SYSTEM_RO {
            c.args(["--ro-bind-try", p, p]);
        }
        c.args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
        for m in job.mounts {
            let flag = if m.writable { "--bind" } else { "--ro-bind" };
            c.arg(flag).arg(&m.host).arg(&m.dest);
        }
        c.arg("--bind").arg(job.workspace).arg(WORKSPACE);
        c.args(["--chdir", WORKSPACE, "--"]);
        c.args(job.argv);
        c
    }
}

/// Runs between fork and exec: async-signal-safe calls only.
fn apply_limits(l: &Limits, drop_to: Option<u32>) -> std::io::Result<()> {
    fn set(res: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    const MIB: u64 = 1024 * 1024;
    set(libc::RLIMIT_CPU, l.cpu_s, l.cpu_s + 1)?;
    set(libc::RLIMIT_AS, l.memory_mb * MIB, l.memory_mb * MIB)?;
    set(libc::RLIMIT_FSIZE, l.file_mb * MIB, l.file_mb * MIB)?;
    set(libc::RLIMIT_NOFILE, l.open_files, l.open_files)?;
    set(libc::RLIMIT_CORE, 0, 0)?;
    if let Some(uid) = drop_to {
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        // The uid is this run's alone, so the count is this run's processes.
        set(libc::RLIMIT_NPROC, l.procs, l.procs)?;
    }
    // Without a dedicated uid the harness sets RLIMIT_NPROC inside the sandbox, where the
    // new user namespace counts only the sandbox's processes.
    Ok(())
}

/// Output read so far from one pipe, and whether the reader is done.
struct CappedReader {
    buf: std::sync::Arc<Mutex<(Vec<u8>, bool)>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl CappedReader {
    fn finish(self, grace: Duration) -> (String, bool) {
        let _ = self.done.recv_timeout(grace);
        let guard = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        (String::from_utf8_lossy(&guard.0).into_owned(), guard.1)
    }
}

fn spawn_capped_reader<R: Read + Send + 'static>(pipe: Option<R>, cap: usize) -> CappedReader {
    let buf = std::sync::Arc::new(Mutex::new((Vec::new(), false)));
    let (tx, done) = std::sync::mpsc::channel();
    let shared = buf.clone();
    std::thread::spawn(move || {
        let Some(mut pipe) = pipe else {
            let _ = tx.send(());
            return;
        };
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut g = shared.lock().unwrap_or_else(|e| e.into_inner());
                    let room = cap.saturating_sub(g.0.len());
                    g.0.extend_from_slice(&chunk[..n.min(room)]);
                    if n > room {
                        g.1 = true;
                        break; // dropping the pipe makes further writes fail
                    }
                }
            }
        }
        let _ = tx.send(());
    });
    CappedReader { buf, done }
}

fn chown_tree(root: &Path, uid: u32) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    fn one(p: &Path, uid: u32) -> Result<()> {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes())?;
        if unsafe { libc::lchown(c.as_ptr(), uid, uid) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("chown {}", p.display()));
        }
        Ok(())
    }
    one(root, uid)?;
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            chown_tree(&entry.path(), uid)?;
        } else {
            one(&entry.path(), uid)?;
        }
    }
    Ok(())
}
