# Imported by every Python process in the sandbox before any other code: caps the number of
# processes inside the sandbox's user namespace (see src/sandbox/mod.rs).
import os

_n = os.environ.get("ATOMRL_NPROC")
if _n:
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (int(_n), int(_n)))
    except (ValueError, OSError):
        pass
