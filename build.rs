//! Compiles `kernels/*.cu` into one fatbin embedded in the binary, and generates the Rust side of
//! the kernel interface from the sources:
//!
//! - `kernels.rs` in `OUT_DIR`: the `Kernel` enum (one variant per `extern "C" __global__`
//!   function, so a misspelled kernel is a compile error), and one `#[repr(C)]` struct per params
//!   struct declared in `kernels/params.cuh`, with its size asserted on both sides.
//! - `kernels.fatbin` in `OUT_DIR`: SASS for sm_80 and sm_90 and PTX for compute_80, or an empty
//!   file when no nvcc is found, in which case `cfg(atomrl_kernels)` is not set and the CUDA
//!   backend reports why (`ATOMRL_KERNELS_STATUS`).
//!
//! nvcc is looked up in `CUDA_HOME`/`CUDA_PATH`, `PATH`, `/usr/local/cuda` and the project-local
//! toolkit `.cache/cuda/` that `scripts/install-nvcc.sh` fills. `ATOMRL_REQUIRE_KERNELS=1` turns a
//! missing nvcc or a failed compile into a build error. Nothing outside `OUT_DIR` is written.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const ARCH_FLAGS: &[&str] = &[
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_80,code=compute_80",
];

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let kernels_dir = root.join("kernels");
    println!("cargo::rustc-check-cfg=cfg(atomrl_kernels)");
    println!("cargo::rerun-if-changed=kernels");
    for var in ["ATOMRL_REQUIRE_KERNELS", "CUDA_HOME", "CUDA_PATH", "PATH", "NVCC_CCBIN"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    // Watch the project-local toolkit only where it exists: Cargo reruns a build script on every
    // build while a watched path is missing. scripts/install-nvcc.sh touches build.rs instead.
    let local_nvcc = root.join(".cache/cuda/nvidia/cu13/bin/nvcc");
    if local_nvcc.exists() {
        println!("cargo::rerun-if-changed={}", local_nvcc.display());
    }

    let mut sources: Vec<PathBuf> = fs::read_dir(&kernels_dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    sources.retain(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("cu" | "cuh")));
    sources.sort();
    for s in &sources {
        println!("cargo::rerun-if-changed={}", s.display());
    }
    let cu_files: Vec<&PathBuf> = sources.iter().filter(|p| p.extension().unwrap() == "cu").collect();

    // ---- the kernel interface, from the sources
    let params_src = fs::read_to_string(kernels_dir.join("params.cuh")).unwrap_or_default();
    let structs = parse_params(&params_src).unwrap_or_else(|e| fail(&format!("kernels/params.cuh: {e}")));
    let mut kernels = Vec::new();
    for f in &cu_files {
        let src = fs::read_to_string(f).unwrap();
        for (name, params) in parse_kernels(&src) {
            if !structs.iter().any(|s| s.name == params) {
                fail(&format!("{}: kernel {name} takes `{params}`, which kernels/params.cuh does not declare", f.display()));
            }
            let file = f.file_name().unwrap().to_string_lossy().into_owned();
            kernels.push(KernelDecl { name, params, file });
        }
    }
    kernels.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = kernels.windows(2).find(|w| w[0].name == w[1].name) {
        fail(&format!("kernel {} is defined twice", w[0].name));
    }
    fs::write(out.join("kernels.rs"), rust_interface(&structs, &kernels)).unwrap();

    // ---- the fatbin
    let fatbin = out.join("kernels.fatbin");
    let require = env::var("ATOMRL_REQUIRE_KERNELS").is_ok_and(|v| v == "1");
    let status = match find_nvcc(&root) {
        None => Err("no nvcc found (looked in $CUDA_HOME/bin, $CUDA_PATH/bin, $PATH, /usr/local/cuda/bin, .cache/cuda/nvidia/cu13/bin)".to_string()),
        Some(nvcc) => compile(&nvcc, &root, &out, &cu_files, &structs, &fatbin).map(|()| nvcc),
    };
    match status {
        Ok(nvcc) => {
            println!("cargo::rustc-cfg=atomrl_kernels");
            println!("cargo::rustc-env=ATOMRL_KERNELS_STATUS=compiled by {}", nvcc.display());
        }
        Err(why) => {
            if require {
                fail(&format!("ATOMRL_REQUIRE_KERNELS=1 but the kernels were not built: {why}"));
            }
            println!("cargo::warning=CUDA kernels not built: {}", why.lines().next().unwrap_or(""));
            fs::write(&fatbin, b"").unwrap();
            let one_line = why.replace('\n', " ");
            println!("cargo::rustc-env=ATOMRL_KERNELS_STATUS={one_line}");
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}

fn find_nvcc(root: &Path) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = env::var_os(var) {
            candidates.push(PathBuf::from(home).join("bin/nvcc"));
        }
    }
    if let Some(path) = env::var_os("PATH") {
        candidates.extend(env::split_paths(&path).map(|d| d.join("nvcc")));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/bin/nvcc"));
    candidates.push(root.join(".cache/cuda/nvidia/cu13/bin/nvcc"));
    candidates.into_iter().find(|p| p.is_file())
}

fn compile(nvcc: &Path, root: &Path, out: &Path, cu_files: &[&PathBuf], structs: &[ParamStruct], fatbin: &Path) -> Result<(), String> {
    // One translation unit (so one module) that includes every kernel file, plus a static check
    // that the C++ and Rust layouts of every params struct agree.
    let mut unit = String::from("// Generated by build.rs: every kernel file in one translation unit.\n");
    for f in cu_files {
        writeln!(unit, "#include \"{}\"", f.display()).unwrap();
    }
    for s in structs {
        writeln!(unit, "static_assert(sizeof({}) == {}, \"{} layout differs from the Rust mirror\");", s.name, s.size(), s.name).unwrap();
        for (field, offset) in s.offsets() {
            writeln!(unit, "static_assert(offsetof({}, {}) == {}, \"{}::{} offset\");", s.name, field, offset, s.name, field).unwrap();
        }
    }
    let unit_path = out.join("atomrl_kernels.cu");
    fs::write(&unit_path, unit).unwrap();
    let mut cmd = Command::new(nvcc);
    cmd.arg("-fatbin")
        .args(["-O3", "-std=c++17", "--use_fast_math", "--threads", "2", "-Xptxas=--warn-on-spills"])
        .args(ARCH_FLAGS)
        .arg("-I")
        .arg(root.join("kernels"))
        .arg(&unit_path)
        .arg("-o")
        .arg(fatbin);
    if let Some(ccbin) = env::var_os("NVCC_CCBIN") {
        cmd.arg("-ccbin").arg(ccbin);
    }
    let output = cmd.output().map_err(|e| format!("running {}: {e}", nvcc.display()))?;
    if !output.status.success() {
        return Err(format!("{} failed:\n{}", nvcc.display(), String::from_utf8_lossy(&output.stderr)));
    }
    // Register spills and other ptxas/nvcc warnings show up in the cargo output.
    for line in String::from_utf8_lossy(&output.stderr).lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo::warning=nvcc: {line}");
    }
    Ok(())
}

// ---- parsing the kernel sources

struct KernelDecl {
    name: String,
    params: String,
    file: String,
}

/// `extern "C" __global__ [__launch_bounds__(..)] void NAME(const PARAMS p)`.
fn parse_kernels(src: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = src[from..].find("__global__") {
        let at = from + i;
        from = at + "__global__".len();
        // `extern "C"` must sit in the same declaration, before `__global__`.
        let decl_start = src[..at].rfind([';', '}']).map_or(0, |p| p + 1);
        if !src[decl_start..at].contains("extern \"C\"") {
            continue;
        }
        // `void` and `__launch_bounds__(..)` may come in either order.
        let mut rest = src[from..].trim_start();
        let mut saw_void = false;
        loop {
            if let Some(r) = rest.strip_prefix("__launch_bounds__") {
                let Some(close) = r.find(')') else { return found };
                rest = r[close + 1..].trim_start();
            } else if let Some(r) = rest.strip_prefix("void") {
                saw_void = true;
                rest = r.trim_start();
            } else {
                break;
            }
        }
        if !saw_void {
            continue;
        }
        let r = rest;
        let Some(open) = r.find('(') else { break };
        let name = r[..open].trim().to_string();
        let Some(close) = r[open..].find(')') else { break };
        let args = r[open + 1..open + close].trim();
        let ty = args.trim_start_matches("const ").split_whitespace().next().unwrap_or("").to_string();
        found.push((name, ty));
    }
    found
}

struct Field {
    name: String,
    rust: &'static str,
    size: usize,
}

struct ParamStruct {
    name: String,
    doc: String,
    fields: Vec<Field>,
}

impl ParamStruct {
    fn offsets(&self) -> Vec<(String, usize)> {
        let mut off = 0usize;
        self.fields
            .iter()
            .map(|f| {
                off = off.div_ceil(f.size) * f.size;
                let here = off;
                off += f.size;
                (f.name.clone(), here)
            })
            .collect()
    }
    fn size(&self) -> usize {
        let align = self.fields.iter().map(|f| f.size).max().unwrap_or(1);
        let end = self.offsets().last().map(|(_, o)| *o).unwrap_or(0) + self.fields.last().map(|f| f.size).unwrap_or(0);
        end.div_ceil(align) * align
    }
}

/// Reads `struct NAME { TYPE FIELD; ... };` blocks. Pointers become `u64` device addresses;
/// scalars must be one of the fixed-size types below.
fn parse_params(src: &str) -> Result<Vec<ParamStruct>, String> {
    let mut out = Vec::new();
    let mut doc = String::new();
    let mut current: Option<ParamStruct> = None;
    for raw in src.lines() {
        let line = raw.trim();
        if let Some(c) = line.strip_prefix("///") {
            doc.push_str(c.trim());
            doc.push(' ');
            continue;
        }
        let code = line.split("//").next().unwrap().trim();
        if code.is_empty() || code.starts_with('#') {
            continue;
        }
        if let Some(s) = current.as_mut() {
            if code.starts_with("};") {
                out.push(current.take().unwrap());
                continue;
            }
            let decl = code.strip_suffix(';').ok_or_else(|| format!("expected `TYPE NAME;`, got `{code}`"))?;
            let (ty, name) = decl.rsplit_once(|c: char| c.is_whitespace() || c == '*').ok_or_else(|| format!("cannot read field `{decl}`"))?;
            let pointer = decl.contains('*');
            let (rust, size) = if pointer {
                ("u64", 8)
            } else {
                match ty.trim() {
                    "int32_t" | "int" => ("i32", 4),
                    "uint32_t" | "unsigned" => ("u32", 4),
                    "float" => ("f32", 4),
                    "int64_t" => ("i64", 8),
                    "uint64_t" => ("u64", 8),
                    other => return Err(format!("field `{name}` of {}: unsupported type `{other}`", s.name)),
                }
            };
            s.fields.push(Field { name: name.trim().to_string(), rust, size });
        } else if let Some(rest) = code.strip_prefix("struct ") {
            let name = rest.trim_end_matches('{').trim().to_string();
            current = Some(ParamStruct { name, doc: std::mem::take(&mut doc), fields: Vec::new() });
        } else {
            doc.clear();
        }
    }
    Ok(out)
}

fn snake_to_camel(s: &str) -> String {
    s.split('_').map(|w| {
        let mut c = w.chars();
        c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
    }).collect()
}

fn rust_interface(structs: &[ParamStruct], kernels: &[KernelDecl]) -> String {
    let mut s = String::from("// Generated by build.rs from kernels/*.cu and kernels/params.cuh.\n\n");
    s.push_str("/// Every kernel in the embedded module, named as in its `.cu` file.\n");
    s.push_str("#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]\npub enum Kernel {\n");
    for k in kernels {
        writeln!(s, "    /// `{}` in `kernels/{}`, takes `{}`.\n    {},", k.name, k.file, k.params, snake_to_camel(&k.name)).unwrap();
    }
    s.push_str("}\n\nimpl Kernel {\n    pub const ALL: &'static [Kernel] = &[");
    for k in kernels {
        write!(s, "Kernel::{}, ", snake_to_camel(&k.name)).unwrap();
    }
    s.push_str("];\n    /// The symbol in the module.\n    pub fn name(self) -> &'static str {\n        match self {\n");
    for k in kernels {
        writeln!(s, "            Kernel::{} => \"{}\",", snake_to_camel(&k.name), k.name).unwrap();
    }
    s.push_str("        }\n    }\n    /// The params struct the kernel takes.\n    pub fn params(self) -> &'static str {\n        match self {\n");
    for k in kernels {
        writeln!(s, "            Kernel::{} => \"{}\",", snake_to_camel(&k.name), k.params).unwrap();
    }
    s.push_str("        }\n    }\n    /// The kernel file that defines it.\n    pub fn file(self) -> &'static str {\n        match self {\n");
    for k in kernels {
        writeln!(s, "            Kernel::{} => \"{}\",", snake_to_camel(&k.name), k.file).unwrap();
    }
    s.push_str("        }\n    }\n}\n\n");
    s.push_str("/// A params struct of a kernel: plain data passed by value as its only argument.\npub trait KernelParams: Copy + 'static {\n    const NAME: &'static str;\n}\n\n");
    for st in structs {
        if !st.doc.is_empty() {
            writeln!(s, "/// {}", st.doc.trim()).unwrap();
        }
        writeln!(s, "#[repr(C)]\n#[derive(Clone, Copy, Debug, Default)]\npub struct {} {{", st.name).unwrap();
        for f in &st.fields {
            writeln!(s, "    pub {}: {},", f.name, f.rust).unwrap();
        }
        writeln!(s, "}}\nimpl KernelParams for {} {{\n    const NAME: &'static str = \"{}\";\n}}", st.name, st.name).unwrap();
        writeln!(s, "// SAFETY: plain old data whose layout matches the C++ struct (asserted below and in the .cu unit).\nunsafe impl cudarc::driver::DeviceRepr for {} {{}}", st.name).unwrap();
        writeln!(s, "const _: () = assert!(std::mem::size_of::<{}>() == {});", st.name, st.size()).unwrap();
        for (field, off) in st.offsets() {
            writeln!(s, "const _: () = assert!(std::mem::offset_of!({}, {}) == {});", st.name, field, off).unwrap();
        }
        s.push('\n');
    }
    s.push_str("/// `(name, size in bytes)` of every params struct, as both sides lay it out.\npub const PARAM_SIZES: &[(&str, usize)] = &[");
    for st in structs {
        write!(s, "(\"{}\", {}), ", st.name, st.size()).unwrap();
    }
    s.push_str("];\n");
    s
}
