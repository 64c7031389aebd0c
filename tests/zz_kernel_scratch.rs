use pyramidclip::models::sgemm::{gemm, Epilogue, PackedB};
use std::time::Instant;
#[test]
#[ignore]
fn kernel_rate() {
    for &(m, k, n) in &[(168usize, 192usize, 256usize), (168, 768, 512), (840, 768, 768), (784, 768, 3072)] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.01).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.01).collect();
        let p = PackedB::new(&b, k, n, n, 1);
        let mut c = vec![0f32; m * n];
        for _ in 0..3 { gemm(m, &a, k, &p, 0..n, &mut c, n, &Epilogue::NONE, false); }
        let t = Instant::now();
        let mut it = 0;
        while t.elapsed().as_secs_f64() < 1.5 { gemm(m, &a, k, &p, 0..n, &mut c, n, &Epilogue::NONE, false); it += 1; }
        let g = 2.0 * (m * k * n) as f64 * it as f64 / t.elapsed().as_secs_f64() / 1e9;
        println!("1 thread m{m} k{k} n{n}: {g:.1} GFLOP/s");
    }
}
