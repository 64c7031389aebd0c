//! `pyramidclip merge`: combines the partial results of a sharded evaluation.

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
    results::write_outputs(
        &info,
        &tally,
        elapsed,
        Some(&args.output),
        args.save_predictions.as_deref(),
    )?;
    log.info(format!("wrote {}", args.output.display()));
    if let Some(p) = &args.save_predictions {
        log.info(format!("wrote {}", p.display()));
    }
    Ok(())
}
