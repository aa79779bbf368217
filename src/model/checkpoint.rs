//! Reading and writing Hugging Face model directories: `config.json` plus `model.safetensors`
//! or a sharded `model.safetensors.index.json`, in f32, bf16 or f16, memory-mapped.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use super::config::ModelConfig;
use super::weights::{param_infos, ParamInfo, Weights};

/// A set of memory-mapped safetensors files and which file holds which tensor.
pub struct TensorFiles {
    maps: Vec<(PathBuf, Mmap)>,
    location: HashMap<String, usize>,
}

impl TensorFiles {
    /// Opens `dir/model.safetensors`, or every shard listed in `dir/model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
            let json: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
            let map = json.get("weight_map").and_then(|m| m.as_object()).with_context(|| format!("{} has no weight_map", index.display()))?;
            let mut shards: Vec<String> = map.values().filter_map(|v| v.as_str().map(String::from)).collect();
            shards.sort();
            shards.dedup();
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        Self::open(&files)
    }

    pub fn open(files: &[PathBuf]) -> Result<Self> {
        let mut maps = Vec::new();
        let mut location = HashMap::new();
        for path in files {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            // SAFETY: the file is opened read-only; atomrl never writes a checkpoint in place
            // (it writes a new file and renames it), so the mapping is not mutated under us.
            let map = unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
            let names = SafeTensors::read_metadata(&map)
                .map_err(|e| anyhow::anyhow!("{e:?}"))
                .with_context(|| format!("{} is not a valid safetensors file (truncated?)", path.display()))?;
            // Deserialising checks that every tensor lies inside the file.
            SafeTensors::deserialize(&map)
                .map_err(|e| anyhow::anyhow!("{e:?}"))
                .with_context(|| format!("{} is not a valid safetensors file (truncated?)", path.display()))?;
            for name in names.1.tensors().keys() {
                location.insert(name.clone(), maps.len());
            }
            maps.push((path.clone(), map));
        }
        Ok(TensorFiles { maps, location })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.location.keys().cloned().collect();
        n.sort();
        n
    }

    /// The tensor `name` as f32, checked against `shape`; errors name the tensor and the file.
    pub fn read_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let &i = self.location.get(name).with_context(|| {
            let files: Vec<String> = self.maps.iter().map(|(p, _)| p.display().to_string()).collect();
            format!("tensor {name} is missing from {}", files.join(", "))
        })?;
        let (path, map) = &self.maps[i];
        let st = SafeTensors::deserialize(map).map_err(|e| anyhow::anyhow!("{e:?}")).with_context(|| format!("reading {}", path.display()))?;
        let view = st.tensor(name).map_err(|e| anyhow::anyhow!("{e:?}")).with_context(|| format!("tensor {name} in {}", path.display()))?;
        if view.shape() != shape {
            bail!("tensor {name} in {} has shape {:?}, expected {:?}", path.display(), view.shape(), shape);
        }
        to_f32(&view).with_context(|| format!("tensor {name} in {}", path.display()))
    }

    /// Reads a tensor of any shape (for fixtures and tools).
    pub fn read_any(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let &i = self.location.get(name).with_context(|| format!("tensor {name} is missing"))?;
        let (path, map) = &self.maps[i];
        let st = SafeTensors::deserialize(map).map_err(|e| anyhow::anyhow!("{e:?}")).with_context(|| format!("reading {}", path.display()))?;
        let view = st.tensor(name).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok((view.shape().to_vec(), to_f32(&view).with_context(|| format!("tensor {name} in {}", path.display()))?))
    }
}

fn to_f32(view: &TensorView) -> Result<Vec<f32>> {
    let b = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        Dtype::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        other => bail!("unsupported dtype {other:?} (atomrl reads f32, bf16 and f16)"),
    })
}

/// Loads every parameter of `cfg` from `dir` as host f32 vectors.
pub fn load_weights(dir: &Path, cfg: &ModelConfig) -> Result<Weights<Vec<f32>>> {
    let files = TensorFiles::open_dir(dir)?;
    param_infos(cfg).try_map(|p| files.read_f32(&p.name, &p.shape))
}

/// Storage precision of a written checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveDtype {
    F32,
    Bf16,
}

/// Writes `tensors` (name, shape, data) as one safetensors file, through a temporary name and a
/// rename so a crash never leaves a half-written file under the final name.
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, &[f32])], dtype: SaveDtype) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let raw = match dtype {
                SaveDtype::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                SaveDtype::Bf16 => data.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
            };
            (name.clone(), shape.clone(), raw)
        })
        .collect();
    let st_dtype = match dtype {
        SaveDtype::F32 => Dtype::F32,
        SaveDtype::Bf16 => Dtype::BF16,
    };
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(st_dtype, s.clone(), b).map_err(|e| anyhow::anyhow!("{e:?}"))?)))
        .collect::<Result<_>>()?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, Some(meta), &tmp).map_err(|e| anyhow::anyhow!("{e:?}")).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Writes a Hugging Face model directory: `model.safetensors` with the parameters of `weights`
/// under their Hugging Face names, plus `config.json` and tokenizer files copied from `source_dir`.
pub fn save_model_dir(out: &Path, cfg: &ModelConfig, weights: &Weights<Vec<f32>>, source_dir: &Path, dtype: SaveDtype) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let infos = param_infos(cfg);
    let tensors: Vec<(String, Vec<usize>, &[f32])> = infos
        .zip(weights)
        .into_iter()
        .map(|(info, data): (&ParamInfo, &Vec<f32>)| (info.name.clone(), info.shape.clone(), data.as_slice()))
        .collect();
    write_safetensors(&out.join("model.safetensors"), &tensors, dtype)?;
    for name in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        let src = source_dir.join(name);
        if src.exists() && src != out.join(name) {
            std::fs::copy(&src, out.join(name)).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

/// Reads every tensor of one safetensors file (fixtures, optimizer state).
pub fn read_all(path: &Path) -> Result<BTreeMap<String, (Vec<usize>, Vec<f32>)>> {
    let files = TensorFiles::open(&[path.to_path_buf()])?;
    files.names().into_iter().map(|n| Ok((n.clone(), files.read_any(&n)?))).collect()
}
