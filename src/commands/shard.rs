//! Which slice of the data this process evaluates: `--shard I/N`, or the environment set by
//! torchrun / torch.distributed.launch, Slurm, or scripts/test.sh.

use super::{exit, fail};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
    /// The process's GPU on its node.
    pub local_rank: Option<usize>,
}

impl Shard {
    pub fn single() -> Self {
        Shard {
            index: 0,
            count: 1,
            local_rank: None,
        }
    }
    /// Positions of the sorted sample list this shard owns: every count-th one.
    pub fn positions(&self, total: usize) -> Vec<usize> {
        (self.index..total).step_by(self.count).collect()
    }
}

fn env_usize(name: &str) -> anyhow::Result<Option<usize>> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map(Some).map_err(|_| {
            fail(
                exit::USAGE,
                format!("environment variable {name}={v:?} is not a non-negative integer"),
            )
        }),
        _ => Ok(None),
    }
}

pub fn parse_flag(s: &str) -> anyhow::Result<(usize, usize)> {
    let bad = || {
        fail(
            exit::USAGE,
            format!("--shard {s}: expected I/N with 0 <= I < N, e.g. 0/4"),
        )
    };
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

pub fn resolve(flag: Option<&str>) -> anyhow::Result<Shard> {
    let local = match env_usize("LOCAL_RANK")? {
        Some(l) => Some(l),
        None => env_usize("SLURM_LOCALID")?,
    };
    let (index, count) = if let Some(s) = flag {
        parse_flag(s)?
    } else if let (Some(r), Some(w)) = (env_usize("RANK")?, env_usize("WORLD_SIZE")?) {
        (r, w)
    } else if let (Some(r), Some(w)) = (env_usize("SLURM_PROCID")?, env_usize("SLURM_NTASKS")?) {
        (r, w)
    } else if let (Some(hosts), Some(gpus), Some(node)) = (
        env_usize("HOST_NUM")?,
        env_usize("HOST_GPU_NUM")?,
        env_usize("INDEX")?,
    ) {
        (node * gpus + local.unwrap_or(0), hosts * gpus)
    } else {
        (0, 1)
    };
    if count == 0 || index >= count {
        return Err(fail(
            exit::USAGE,
            format!("shard {index} of {count} is out of range (check RANK/WORLD_SIZE or --shard)"),
        ));
    }
    Ok(Shard {
        index,
        count,
        local_rank: local,
    })
}
