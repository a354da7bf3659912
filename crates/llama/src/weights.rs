//! Reading HF safetensors checkpoints: `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`. Files are memory-mapped and tensors point into the mapping
//! (no copy) when dtype and device allow.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use tch::{Device, Kind, Tensor};

/// Named tensors of a checkpoint, with the mappings they may point into.
pub(crate) struct Weights {
    tensors: HashMap<String, Tensor>,
    /// Tensors made with `from_blob` borrow these pages: the maps must outlive them.
    _maps: Vec<Mmap>,
}

impl Weights {
    /// Loads every tensor of the checkpoint in `dir`, converted to `kind` on `device`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Weights> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<std::path::PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index)
                .with_context(|| format!("reading {}", index.display()))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", index.display()))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .with_context(|| format!("{} has no weight_map", index.display()))?;
            let mut names: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            names.iter().map(|n| dir.join(n)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut tensors = HashMap::new();
        let mut maps = Vec::new();
        for file in files {
            let f = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            // SAFETY: the file is mapped read-only; checkpoints are not modified while loaded.
            let map =
                unsafe { Mmap::map(&f) }.with_context(|| format!("mapping {}", file.display()))?;
            let st = safetensors::SafeTensors::deserialize(&map[..])
                .with_context(|| format!("reading safetensors {}", file.display()))?;
            for (name, view) in st.tensors() {
                let stored = match view.dtype() {
                    safetensors::Dtype::F32 => Kind::Float,
                    safetensors::Dtype::F16 => Kind::Half,
                    safetensors::Dtype::BF16 => Kind::BFloat16,
                    other => bail!(
                        "{}: tensor {name} has unsupported dtype {other:?}",
                        file.display()
                    ),
                };
                let size: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
                let mut strides = vec![1i64; size.len()];
                for i in (0..size.len().saturating_sub(1)).rev() {
                    strides[i] = strides[i + 1] * size[i + 1];
                }
                // SAFETY: the view's bytes live in `map`, which is kept in `Weights`; the tensor
                // is only read (converted copies are made below when needed).
                let t = unsafe {
                    Tensor::from_blob(view.data().as_ptr(), &size, &strides, stored, Device::Cpu)
                };
                let t = if stored == kind && device == Device::Cpu {
                    t
                } else {
                    t.to_device(device).to_kind(kind)
                };
                tensors.insert(name, t);
            }
            maps.push(map);
        }
        Ok(Weights {
            tensors,
            _maps: maps,
        })
    }

    pub fn take(&mut self, name: &str) -> Result<Tensor> {
        self.tensors
            .remove(name)
            .with_context(|| format!("the checkpoint has no tensor `{name}`"))
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn into_maps(self) -> Vec<Mmap> {
        self._maps
    }
}
