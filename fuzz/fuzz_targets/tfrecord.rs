//! Any bytes as a TFRecord file of `tf.train.Example`s (a TFDS shard): records or an error,
//! never a panic; every byte string handed out lies inside its record.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pyramidclip::data::tfrecord::{self, Feature};

fuzz_target!(|data: &[u8]| {
    // The bytes as a whole file, and as one record's data (checksums aside).
    let mut records: Vec<Vec<u8>> = tfrecord::Records::new(data)
        .map_while(Result::ok)
        .map(|(off, rec)| {
            assert!(off as usize + rec.len() <= data.len());
            rec
        })
        .collect();
    records.push(data.to_vec());
    for rec in &records {
        let Ok(ex) = tfrecord::parse_example(rec) else {
            continue;
        };
        for (_, f) in &ex.features {
            if let Feature::Bytes(v) = f {
                for r in v {
                    assert!(r.start <= r.end && r.end <= rec.len());
                }
            }
        }
        let _ = ex.one_bytes("image");
        let _ = ex.int64("label");
        let _ = ex.float("objects/location");
    }
});
