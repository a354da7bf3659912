//! Exact and MinHash LSH deduplication that scales past memory.
//!
//! While documents stream through the filters, each kept document appends one record per
//! LSH bucket — `(128-bit hash of the bucket's minhashes, document index)` — to that
//! bucket's spill file, and one `(hash of the normalised text, index)` record to the exact
//! file. Afterwards each file is sorted on its own (one bucket in memory at a time: 20 bytes
//! per document) and equal keys join their documents in a union-find over document indices
//! (4 bytes per document). A cluster keeps its first document (the smallest index, i.e. the
//! first in input order), which makes the choice deterministic.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

const RECORD: usize = 20;

pub struct Spill {
    exact: Option<BufWriter<File>>,
    buckets: Vec<BufWriter<File>>,
}

impl Spill {
    pub fn create(dir: &Path, exact: bool, buckets: usize) -> Result<Spill> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let open = |name: String| -> Result<BufWriter<File>> {
            let path = dir.join(name);
            Ok(BufWriter::with_capacity(
                1 << 20,
                File::create(&path).with_context(|| format!("creating {}", path.display()))?,
            ))
        };
        Ok(Spill {
            exact: if exact {
                Some(open("exact.bin".into())?)
            } else {
                None
            },
            buckets: (0..buckets)
                .map(|b| open(format!("bucket-{b:03}.bin")))
                .collect::<Result<_>>()?,
        })
    }

    pub fn add(&mut self, index: u32, exact: u128, buckets: Option<&[u128]>) -> Result<()> {
        if let Some(w) = &mut self.exact {
            write_record(w, exact, index)?;
        }
        if let Some(keys) = buckets {
            for (w, &key) in self.buckets.iter_mut().zip(keys) {
                write_record(w, key, index)?;
            }
        }
        Ok(())
    }

    /// Flushes the spill files; they are final afterwards.
    pub fn finish(self) -> Result<()> {
        if let Some(mut w) = self.exact {
            w.flush().context("writing the exact-dedup spill")?;
        }
        for mut w in self.buckets {
            w.flush().context("writing a MinHash spill")?;
        }
        Ok(())
    }
}

/// Sorts the spills of all segments, one file kind at a time, and clusters the documents.
/// `exact_dups[i]` says whether document `i` repeats an earlier document's text.
pub fn cluster(dirs: &[PathBuf], exact: bool, buckets: usize, documents: u32) -> Result<Clusters> {
    let mut uf = UnionFind::new(documents);
    let mut exact_dups = vec![false; documents as usize];
    let mut kinds: Vec<(String, bool)> = Vec::new();
    if exact {
        kinds.push(("exact.bin".into(), true));
    }
    kinds.extend((0..buckets).map(|b| (format!("bucket-{b:03}.bin"), false)));
    for (name, is_exact) in kinds {
        let mut records = Vec::new();
        for dir in dirs {
            records.extend(read_records(&dir.join(name.as_str()))?);
        }
        records.sort_unstable();
        if let Some(&(_, bad)) = records.iter().find(|r| r.1 >= documents) {
            anyhow::bail!("{name}: document {bad} is beyond the {documents} documents: a checkpoint is damaged");
        }
        for pair in records.windows(2) {
            if pair[0].0 == pair[1].0 {
                if is_exact {
                    exact_dups[pair[1].1 as usize] = true;
                }
                uf.union(pair[0].1, pair[1].1);
            }
        }
    }
    Ok(Clusters { uf, exact_dups })
}

fn write_record(w: &mut BufWriter<File>, key: u128, index: u32) -> Result<()> {
    w.write_all(&key.to_le_bytes())?;
    w.write_all(&index.to_le_bytes())?;
    Ok(())
}

fn read_records(path: &Path) -> Result<Vec<(u128, u32)>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata()?.len() as usize;
    if !len.is_multiple_of(RECORD) {
        anyhow::bail!(
            "{} is truncated ({len} bytes is no whole number of records)",
            path.display()
        );
    }
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut out = Vec::with_capacity(len / RECORD);
    let mut buf = [0u8; RECORD];
    loop {
        match reader.read_exact(&mut buf) {
            Ok(()) => {
                let mut key = [0u8; 16];
                key.copy_from_slice(&buf[..16]);
                let mut idx = [0u8; 4];
                idx.copy_from_slice(&buf[16..]);
                out.push((u128::from_le_bytes(key), u32::from_le_bytes(idx)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(out)
}

pub struct Clusters {
    uf: UnionFind,
    pub exact_dups: Vec<bool>,
}

impl Clusters {
    /// The document that represents `i`'s cluster (the first of it); `i` itself if unique.
    pub fn root(&mut self, i: u32) -> u32 {
        self.uf.find(i)
    }

    pub fn cluster_size(&mut self, i: u32) -> u32 {
        let r = self.uf.find(i);
        self.uf.size[r as usize]
    }
}

/// Union-find whose roots are always the smallest member.
struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    fn new(n: u32) -> UnionFind {
        UnionFind {
            parent: (0..n).collect(),
            size: vec![1; n as usize],
        }
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = p;
        }
        x
    }

    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        let (root, child) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[child as usize] = root;
        self.size[root as usize] += self.size[child as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_keep_the_first_document() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spill::create(dir.path(), true, 2).unwrap();
        // 0 and 3 share bucket 0; 3 and 4 share bucket 1; 1 and 2 are the same text.
        s.add(0, 10, Some(&[100, 200])).unwrap();
        s.add(1, 11, Some(&[101, 201])).unwrap();
        s.add(2, 11, Some(&[102, 202])).unwrap();
        s.add(3, 13, Some(&[100, 203])).unwrap();
        s.add(4, 14, Some(&[104, 203])).unwrap();
        s.add(5, 15, None).unwrap();
        s.finish().unwrap();
        let mut c = cluster(&[dir.path().to_path_buf()], true, 2, 6).unwrap();
        let roots: Vec<u32> = (0..6).map(|i| c.root(i)).collect();
        assert_eq!(roots, vec![0, 1, 1, 0, 0, 5]);
        assert_eq!(c.exact_dups, vec![false, false, true, false, false, false]);
        assert_eq!(c.cluster_size(4), 3);
    }
}
