//! A helper of `eval` (not a subcommand): which slice of the data this process evaluates,
//! from `--shard I/N` or the environment set by torchrun / torch.distributed.launch, Slurm, or
//! scripts/test.sh.

use super::{exit, fail};
use crate::cli::ShardSpec;
use crate::eval::Shard;

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

/// `--shard` when given, else the launcher's environment, else the whole dataset;
/// `local_rank` (`--local_rank`, what torch.distributed.launch appends) before LOCAL_RANK.
pub fn resolve(flag: Option<ShardSpec>, local_rank: Option<usize>) -> anyhow::Result<Shard> {
    let local = match local_rank {
        Some(l) => Some(l),
        None => match env_usize("LOCAL_RANK")? {
            Some(l) => Some(l),
            None => env_usize("SLURM_LOCALID")?,
        },
    };
    let (index, count) = if let Some(s) = flag {
        (s.index, s.count)
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
