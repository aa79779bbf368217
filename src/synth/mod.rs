//! Building real task instances from Python packages by mutation.
