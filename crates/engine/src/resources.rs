//! The machine's declared resources and their assignment to running attempts.

use leo_spec::Resources;

/// What this machine offers to stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub cpus: u32,
    /// GPU ids as `CUDA_VISIBLE_DEVICES` takes them: indices, `GPU-…` UUIDs or `MIG-…` ids.
    pub gpus: Vec<String>,
}

impl Machine {
    /// CPUs from the OS; GPUs from `CUDA_VISIBLE_DEVICES` when set, else the NVIDIA driver.
    pub fn detect() -> Machine {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let gpus = match std::env::var("CUDA_VISIBLE_DEVICES") {
            Ok(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            Err(_) => {
                let n = std::fs::read_dir("/proc/driver/nvidia/gpus")
                    .map(|d| d.count())
                    .unwrap_or(0);
                (0..n).map(|i| i.to_string()).collect()
            }
        };
        Machine { cpus, gpus }
    }
}

/// Free CPUs and GPUs.
#[derive(Debug)]
pub(crate) struct Pool {
    cpus_total: u32,
    cpus_free: u32,
    gpus_free: Vec<String>,
    gpus_total: usize,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Grant {
    pub cpus: u32,
    pub gpus: Vec<String>,
}

impl Pool {
    pub fn new(m: &Machine) -> Pool {
        Pool {
            cpus_total: m.cpus,
            cpus_free: m.cpus,
            gpus_free: m.gpus.clone(),
            gpus_total: m.gpus.len(),
        }
    }

    /// Whether the request can ever be met on this machine; an error says why not.
    pub fn feasible(&self, r: &Resources) -> Result<(), String> {
        if r.gpus as usize > self.gpus_total {
            return Err(format!(
                "needs {} GPU(s) but this machine offers {} (set CUDA_VISIBLE_DEVICES or --gpus)",
                r.gpus, self.gpus_total
            ));
        }
        Ok(())
    }

    /// CPUs are clamped to the machine: a stage asking for more than exist runs alone.
    fn cpus_for(&self, r: &Resources) -> u32 {
        r.cpus.min(self.cpus_total)
    }

    pub fn try_acquire(&mut self, r: &Resources) -> Option<Grant> {
        let cpus = self.cpus_for(r);
        if cpus > self.cpus_free || r.gpus as usize > self.gpus_free.len() {
            return None;
        }
        self.cpus_free -= cpus;
        let gpus = self.gpus_free.drain(..r.gpus as usize).collect();
        Some(Grant { cpus, gpus })
    }

    pub fn release(&mut self, g: Grant) {
        self.cpus_free += g.cpus;
        self.gpus_free.extend(g.gpus);
        // Numeric ids in numeric order; the order only decides which GPU goes next.
        self.gpus_free
            .sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_and_releases() {
        let mut p = Pool::new(&Machine {
            cpus: 2,
            gpus: vec!["0".into(), "1".into()],
        });
        let r = Resources {
            cpus: 1,
            gpus: 1,
            memory: None,
            ..Default::default()
        };
        let a = p.try_acquire(&r).unwrap();
        let b = p.try_acquire(&r).unwrap();
        assert_eq!(
            (a.gpus.clone(), b.gpus.clone()),
            (vec!["0".to_string()], vec!["1".to_string()])
        );
        assert!(p
            .try_acquire(&Resources {
                cpus: 1,
                gpus: 0,
                memory: None,
                ..Default::default()
            })
            .is_none());
        p.release(a);
        assert!(p
            .try_acquire(&Resources {
                cpus: 1,
                gpus: 0,
                memory: None,
                ..Default::default()
            })
            .is_some());
        // More CPUs than the machine has: clamped, so it can still run.
        p.release(b);
        let mut q = Pool::new(&Machine {
            cpus: 2,
            gpus: vec![],
        });
        assert_eq!(
            q.try_acquire(&Resources {
                cpus: 16,
                gpus: 0,
                memory: None,
                ..Default::default()
            })
            .unwrap()
            .cpus,
            2
        );
        assert!(q
            .feasible(&Resources {
                cpus: 1,
                gpus: 1,
                memory: None,
                ..Default::default()
            })
            .is_err());
    }
}
