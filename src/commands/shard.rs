//! A helper of the evaluating commands (not a subcommand): which slice of the data this process
//! evaluates (`eval --shard`), or which of the runs (`--distributed`), from `--shard I/N` or the
//! environment set by torchrun / torch.distributed.launch, Slurm, or scripts/test.sh.

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

/// The first of `names` that is set.
fn first_of(names: &[&str]) -> anyhow::Result<Option<usize>> {
    for n in names {
        if let Some(v) = env_usize(n)? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// `--shard` when given, else the launcher's environment, else the whole dataset;
/// `local_rank` (`--local_rank`, what torch.distributed.launch appends) before LOCAL_RANK.
pub fn resolve(flag: Option<ShardSpec>, local_rank: Option<usize>) -> anyhow::Result<Shard> {
    let local = match local_rank {
        Some(l) => Some(l),
        None => first_of(&[
            "LOCAL_RANK",
            "SLURM_LOCALID",
            "MPI_LOCALRANKID",
            "OMPI_COMM_WORLD_LOCAL_RANK",
        ])?,
    };
    let (index, count) = if let Some(s) = flag {
        (s.index, s.count)
    } else if let (Some(r), Some(w)) = (env_usize("RANK")?, env_usize("WORLD_SIZE")?) {
        (r, w)
    } else if let (Some(r), Some(w)) = (env_usize("SLURM_PROCID")?, env_usize("SLURM_NTASKS")?) {
        (r, w)
    } else if let (Some(r), Some(w)) = (env_usize("PMI_RANK")?, env_usize("PMI_SIZE")?) {
        // MPI launchers (Intel MPI / MPICH, Open MPI), as open_clip's world_info_from_env reads.
        (r, w)
    } else if let (Some(r), Some(w)) = (
        env_usize("OMPI_COMM_WORLD_RANK")?,
        env_usize("OMPI_COMM_WORLD_SIZE")?,
    ) {
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

/// CLIP_benchmark's `--distributed`: this process's share of the runs of one language.
#[derive(Clone, Copy, Debug)]
pub struct RunShare {
    pub rank: usize,
    pub world: usize,
    /// The shuffle's seed (CLIP_benchmark's `--seed`).
    pub seed: u64,
    /// This language's place among the run's languages, and their number.
    pub language: usize,
    pub languages: usize,
}

impl RunShare {
    /// With `--distributed`, the process's place among its peers as [`resolve`] finds it (the
    /// launcher's environment, or `flag`); `None` without.
    pub fn of(
        distributed: bool,
        flag: Option<ShardSpec>,
        local_rank: Option<usize>,
        seed: u64,
    ) -> anyhow::Result<Option<Self>> {
        if !distributed {
            return Ok(None);
        }
        Ok(Some(Self::new(resolve(flag, local_rank)?, seed)))
    }

    /// The share of the process that `shard` places (one language).
    pub fn new(shard: Shard, seed: u64) -> Self {
        Self {
            rank: shard.index,
            world: shard.count,
            seed,
            language: 0,
            languages: 1,
        }
    }

    /// Which (model, dataset) runs of this language are this process's, `[model][dataset]`:
    /// CLIP_benchmark lists `product(models, datasets, languages)`, shuffles the list with
    /// Python's `random.seed(seed)` / `random.shuffle`, and rank r takes the runs at r,
    /// r + world, r + 2 world, ...
    pub fn assigned(&self, models: usize, datasets: usize) -> Vec<Vec<bool>> {
        let total = models * datasets * self.languages;
        let mut order: Vec<usize> = (0..total).collect();
        crate::torch_rng::Generator::python(self.seed).python_shuffle(&mut order);
        let mut mine = vec![vec![false; datasets]; models];
        for &run in order.iter().skip(self.rank).step_by(self.world.max(1)) {
            let (md, language) = (run / self.languages, run % self.languages);
            if language == self.language {
                mine[md / datasets][md % datasets] = true;
            }
        }
        mine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_goes_to_exactly_one_rank() {
        let (models, datasets, languages, world) = (3, 4, 2, 5);
        let mut count = vec![0; models * datasets * languages];
        for rank in 0..world {
            for language in 0..languages {
                let share = RunShare {
                    rank,
                    world,
                    seed: 0,
                    language,
                    languages,
                };
                for (m, row) in share.assigned(models, datasets).iter().enumerate() {
                    for (d, &mine) in row.iter().enumerate() {
                        count[(m * datasets + d) * languages + language] += mine as usize;
                    }
                }
            }
        }
        assert!(count.iter().all(|&c| c == 1), "{count:?}");
    }

    #[test]
    fn the_split_is_clip_benchmarks() {
        // CLIP_benchmark with 2 models x 5 datasets, seed 0, 3 ranks: `random.seed(0)`,
        // `random.shuffle(list(range(10)))` gives [7, 8, 1, 5, 3, 4, 2, 0, 9, 6] (CPython
        // 3.11); rank 1 takes positions 1, 4, 7: runs 8, 3, 0.
        let share = RunShare {
            rank: 1,
            world: 3,
            seed: 0,
            language: 0,
            languages: 1,
        };
        let mine = share.assigned(2, 5);
        assert_eq!(mine[0], [true, false, false, true, false]);
        assert_eq!(mine[1], [false, false, false, true, false]);
    }
}
