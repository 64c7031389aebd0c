//! `pyramidclip results`: tabulates result files (model x dataset).

use super::write_output;
use crate::cli::ResultsArgs;
use crate::results::{self, csv_field};

pub fn run(args: ResultsArgs) -> anyhow::Result<()> {
    let rows = args
        .files
        .iter()
        .map(|p| results::read_summary(p))
        .collect::<Result<Vec<_>, _>>()?;
    let table = results::table(&rows);
    let widths: Vec<usize> = (0..table[0].len())
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &table {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    if let Some(out) = &args.csv {
        let mut csv = String::new();
        for row in &table {
            csv.push_str(
                &row.iter()
                    .map(|c| csv_field(c))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            csv.push('\n');
        }
        write_output(out, "--csv", csv.as_bytes())?;
    }
    Ok(())
}
