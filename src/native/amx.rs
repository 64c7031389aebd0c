//! bf16 products through Intel AMX tiles (`tdpbf16ps`, Sapphire Rapids and later) on the
//! operands `bf16.rs` packs: its weight panels (pair rows of 32 columns, 128 bytes apart) are
//! two B tiles side by side and its packed activation rows (bf16 pairs, depth padded to 32)
//! are A tiles, so the two kernels share every buffer and differ only in the inner product.
//! Linux asks the kernel for the tile state first (`arch_prctl(ARCH_REQ_XCOMP_PERM)`).
//!
//! Each block is 32 rows x 32 columns in four f32 accumulator tiles (tmm0-3), fed per 32-deep
//! step by two A tiles (tmm4-5, rows 0-15 and 16-31) and two B tiles (tmm6-7, columns 0-15 and
//! 16-31); the sums go to a 32 x 32 scratch block and from there to the output, whose
//! epilogue stays the f32 kernels'.

/// Rows of a block (two A tiles).
pub const MB: usize = 32;

/// Whether the CPU advertises AMX-BF16 and the OS enabled the tile state in XCR0 (Linux may
/// still refuse it to this process: see [`enable`]).
pub fn advertised() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        x86::advertised()
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// Asks Linux for the AMX tile data state for this process (once; later calls return the
/// first answer). True when the process may execute tile instructions.
pub fn enable() -> bool {
    static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GRANTED.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            advertised() && x86::request_permission()
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    })
}

/// Loads the tile configuration on this thread, for [`block`]s until [`release`]. Between the
/// two the thread must not run anything else that uses tiles (nothing in this crate does).
///
/// # Safety
/// [`enable`] returned true.
pub unsafe fn configure() {
    #[cfg(test)]
    if !enable() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    x86::configure();
}

/// Returns the tiles to their initial state (so context switches save no tile data).
///
/// # Safety
/// As [`configure`].
pub unsafe fn release() {
    #[cfg(test)]
    if !enable() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    x86::release();
}

/// `out[r * 32 + j] = sum_q A[r][q] . B[q][j]` over `steps` 32-deep steps: A is 32 rows of
/// bf16 pairs `a_stride` words apart, B one weight panel (32 words per pair row).
///
/// # Safety
/// Between [`configure`] and [`release`] on this thread; `a` holds `31 * a_stride + 16 *
/// steps` words, `b` `512 * steps`.
pub unsafe fn block(a: *const u32, a_stride: usize, b: *const u32, steps: usize, out: &mut [f32]) {
    assert!(out.len() >= MB * 32);
    // Unit tests on CPUs without AMX run the tiles' arithmetic in software.
    #[cfg(test)]
    if !enable() {
        return emulated(a, a_stride, b, steps, out);
    }
    #[cfg(target_arch = "x86_64")]
    x86::block(a, a_stride, b, steps, out.as_mut_ptr());
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, a_stride, b, steps);
        unreachable!("AMX on a CPU without it");
    }
}

/// [`block`] as the tiles compute it, read with the same addresses: tile loads of 16 rows of
/// 64 bytes, `C[m][n] += A[m][q].lo * B[q][n].lo + A[m][q].hi * B[q][n].hi`.
#[cfg(test)]
unsafe fn emulated(a: *const u32, a_stride: usize, b: *const u32, steps: usize, out: &mut [f32]) {
    let lo = |w: u32| f32::from_bits(w << 16);
    let hi = |w: u32| f32::from_bits(w & 0xffff_0000);
    let mut c = [[0f32; 32]; MB];
    for s in 0..steps {
        for (t, ct) in c.iter_mut().enumerate() {
            // A tile t / 16 row t % 16: 16 words at a + t * a_stride + 16 s.
            let arow = a.add(t * a_stride + 16 * s);
            for (n, cv) in ct.iter_mut().enumerate() {
                // B tile n / 16: 16 pair rows 32 words apart from b + 512 s + 16 (n / 16).
                let bcol = b.add(512 * s + 16 * (n / 16) + n % 16);
                for q in 0..16 {
                    let (x, y) = (*arow.add(q), *bcol.add(32 * q));
                    *cv += lo(x) * lo(y) + hi(x) * hi(y);
                }
            }
        }
    }
    for (r, row) in c.iter().enumerate() {
        out[r * 32..r * 32 + 32].copy_from_slice(row);
    }
}

/// FLOPs of `steps` rounds of four independent `tdpbf16ps` on this thread (0 without AMX),
/// for `bench`'s bf16 peak.
pub fn dot_burst(steps: usize) -> f64 {
    if !enable() {
        return 0.0;
    }
    // Safety: tile state granted above.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::configure();
        x86::burst(steps);
        x86::release();
    };
    (steps * 4 * 16 * 16 * 32 * 2) as f64
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::{__cpuid_count, _xgetbv};

    /// CPUID.(7,0):EDX bits 22 (AMX-BF16) and 24 (AMX-TILE), and XCR0 bits 17-18 (tile
    /// configuration and data) once OSXSAVE says XGETBV may run.
    pub fn advertised() -> bool {
        // Safety: CPUID leaves 0, 1 and 7 exist on every x86_64 CPU (leaf 7 checked against
        // the maximum); XGETBV only after CPUID reports OSXSAVE.
        unsafe {
            if __cpuid_count(0, 0).eax < 7 {
                return false;
            }
            let edx = __cpuid_count(7, 0).edx;
            if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
                return false;
            }
            if __cpuid_count(1, 0).ecx & (1 << 27) == 0 {
                return false;
            }
            xcr0() & (0b11 << 17) == 0b11 << 17
        }
    }

    #[target_feature(enable = "xsave")]
    unsafe fn xcr0() -> u64 {
        _xgetbv(0)
    }

    /// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, then a check with
    /// `ARCH_GET_XCOMP_PERM` that the tile data bit is in the granted set.
    #[cfg(target_os = "linux")]
    pub fn request_permission() -> bool {
        const ARCH_GET_XCOMP_PERM: libc::c_long = 0x1022;
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // Safety: plain system calls; the GET form writes one u64 through a valid pointer.
        unsafe {
            if libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) != 0
            {
                return false;
            }
            let mut granted = 0u64;
            if libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_GET_XCOMP_PERM,
                &mut granted as *mut u64,
            ) != 0
            {
                return false;
            }
            granted & (1 << XFEATURE_XTILEDATA) != 0
        }
    }

    /// Palette 1, tiles 0-7 all 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    const CONFIG: TileConfig = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            // colsb (u16, little-endian) at 16 + 2t, rows at 48 + t.
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
            t += 1;
        }
        TileConfig(c)
    };

    pub unsafe fn configure() {
        asm!(
            "ldtilecfg [{cfg}]",
            cfg = in(reg) &CONFIG as *const TileConfig,
            options(nostack),
        );
    }

    pub unsafe fn release() {
        asm!("tilerelease", options(nostack, nomem));
    }

    pub unsafe fn block(
        a: *const u32,
        a_stride: usize,
        b: *const u32,
        steps: usize,
        out: *mut f32,
    ) {
        let a_bytes = a_stride * 4;
        let a_low = a;
        let a_high = a.add(16 * a_stride);
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "test {n}, {n}",
            "jz 3f",
            "2:",
            "tileloadd tmm4, [{al} + {as_}*1]",
            "tileloadd tmm5, [{ah} + {as_}*1]",
            "tileloadd tmm6, [{b} + {bs}*1]",
            "tileloadd tmm7, [{b} + {bs}*1 + 64]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            // Next 32-deep step: 64 bytes along A's rows, 16 pair rows (2 KiB) down the panel.
            "add {al}, 64",
            "add {ah}, 64",
            "add {b}, 2048",
            "dec {n}",
            "jnz 2b",
            "3:",
            "tilestored [{o} + {os}*1], tmm0",
            "tilestored [{o} + {os}*1 + 64], tmm1",
            "tilestored [{o2} + {os}*1], tmm2",
            "tilestored [{o2} + {os}*1 + 64], tmm3",
            n = inout(reg) steps => _,
            al = inout(reg) a_low => _,
            ah = inout(reg) a_high => _,
            as_ = in(reg) a_bytes,
            b = inout(reg) b => _,
            bs = in(reg) 128usize,
            o = in(reg) out,
            o2 = in(reg) out.add(16 * 32),
            os = in(reg) 128usize,
            options(nostack),
        );
    }

    pub unsafe fn burst(steps: usize) {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "tilezero tmm4",
            "tilezero tmm5",
            "tilezero tmm6",
            "tilezero tmm7",
            "test {n}, {n}",
            "jz 3f",
            "2:",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "dec {n}",
            "jnz 2b",
            "3:",
            n = inout(reg) steps => _,
            options(nostack, nomem),
        );
    }
}
