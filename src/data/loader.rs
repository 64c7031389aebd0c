//! The streaming loader: decodes and crops batches on a worker pool ahead of the consumer.

use super::{Error, Sample};
use crate::preprocess;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

/// One decoded batch, in dataset order.
pub struct Batch {
    /// Positions in the sample list.
    pub indices: Vec<usize>,
    /// `[len, 3, n, n]` 8-bit crops, concatenated.
    pub crops: Vec<u8>,
    /// Samples that failed to decode (with `skip_unreadable`).
    pub skipped: Vec<(usize, String)>,
}

/// What [`stream`] makes of the samples, and with how many threads.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// The model's input size n: crops are `[3, n, n]`.
    pub resolution: usize,
    pub resize: preprocess::Resize,
    pub batch_size: usize,
    pub workers: usize,
    /// Skip (and report) images that fail to decode instead of stopping.
    pub skip_unreadable: bool,
}

/// Decodes batches on a worker pool ahead of the consumer; at most `depth` batches wait in the
/// queue, so memory stays bounded however large the dataset.
pub fn stream(
    samples: Arc<Vec<Sample>>,
    order: Vec<usize>,
    opts: DecodeOptions,
    stop: Arc<AtomicBool>,
) -> mpsc::Receiver<Result<Batch, Error>> {
    let DecodeOptions {
        resolution,
        resize,
        batch_size,
        workers,
        skip_unreadable,
    } = opts;
    let (tx, rx) = mpsc::sync_channel(3);
    std::thread::spawn(move || {
        use rayon::prelude::*;
        let pool = match rayon::ThreadPoolBuilder::new()
            .num_threads(workers.max(1))
            .build()
        {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(Error::Labels(format!(
                    "cannot start decode threads: {e}"
                ))));
                return;
            }
        };
        for chunk in order.chunks(batch_size.max(1)) {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let decoded: Vec<Result<Vec<u8>, preprocess::Error>> = pool.install(|| {
                chunk
                    .par_iter()
                    .map(|&i| samples[i].crop(resolution, resize))
                    .collect()
            });
            let mut batch = Batch {
                indices: Vec::new(),
                crops: Vec::new(),
                skipped: Vec::new(),
            };
            for (&i, r) in chunk.iter().zip(decoded) {
                match r {
                    Ok(c) => {
                        batch.indices.push(i);
                        batch.crops.extend_from_slice(&c);
                    }
                    Err(e) if skip_unreadable => batch.skipped.push((i, e.msg)),
                    Err(e) => {
                        let _ = tx.send(Err(Error::Image(e)));
                        return;
                    }
                }
            }
            if tx.send(Ok(batch)).is_err() {
                return;
            }
        }
    });
    rx
}
