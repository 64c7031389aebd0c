//! `pyramidclip merge`: combines the partial results of a sharded evaluation.

use super::{exit, fail};
use crate::cli::MergeArgs;
use crate::report::Log;
use crate::results;

pub fn run(args: MergeArgs) -> anyhow::Result<()> {
    let log = Log { quiet: false };
    let (info, tally, elapsed) = results::merge_partials(&args.partials)?;
    println!("{}", results::summary_line(&info, &tally));
    if !tally.skipped.is_empty() {
        log.warn(format!(
            "{} unreadable image(s) skipped; accuracy is over the {} images evaluated",
            tally.skipped.len(),
            tally.images()
        ));
    }
    // CLIP_benchmark's placeholders name the files by what the partials computed.
    let vars = results::OutputVars {
        dataset: &info.dataset,
        model: &info.model,
        checkpoint: std::path::Path::new(&info.checkpoint),
        task: results::CLASSIFICATION,
        language: &info.language,
    };
    let fill = |p: &std::path::Path, flag: &str| {
        results::fill_template(p, &vars).map_err(|e| fail(exit::USAGE, format!("{flag} {e}")))
    };
    let output = fill(&args.output, "--output")?;
    let preds = args
        .save_predictions
        .as_deref()
        .map(|p| fill(p, "--save-predictions"))
        .transpose()?;
    results::write_outputs(&info, &tally, elapsed, Some(&output), preds.as_deref())?;
    log.info(format!("wrote {}", output.display()));
    if let Some(p) = &preds {
        log.info(format!("wrote {}", p.display()));
    }
    Ok(())
}
