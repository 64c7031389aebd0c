//! Any bytes as an HDF5 file (PCAM's images and labels): the dataset `x` or `y` opened, rows
//! read at their length and labels read as integers, or an error; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pyramidclip::data::hdf5::Dataset;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("pyramidclip-fuzz-{}.h5", std::process::id()));
    std::fs::write(&path, data).unwrap();
    for name in ["x", "y"] {
        let Ok(ds) = Dataset::open(&path, name) else {
            continue;
        };
        // Rows up to the reader's cap are legal; a few small ones are enough to exercise it.
        if ds.row_len() > 1 << 20 {
            continue;
        }
        for i in 0..ds.shape[0].min(4) {
            if let Ok(row) = ds.read_row(i) {
                assert_eq!(row.len() as u64, ds.row_len());
            }
        }
        if ds.shape[0].saturating_mul(ds.row_len()) <= 1 << 16 {
            let _ = ds.integers();
        }
    }
});
