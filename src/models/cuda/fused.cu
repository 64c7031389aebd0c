// The candle engine's fused GPU kernels (src/models/fused.rs has the CPU reference of each and
// launches these). Every kernel reads its inputs once and writes its output once; arithmetic is
// f32 whatever the storage type. Element-wise kernels use grid-stride loops; the row kernels
// (softmax, LayerNorm) give one warp to a row.
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

typedef unsigned long long u64;

__device__ __forceinline__ float ld(float v) { return v; }
__device__ __forceinline__ float ld(__half v) { return __half2float(v); }
__device__ __forceinline__ float ld(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T st(float v);
template <> __device__ __forceinline__ float st<float>(float v) { return v; }
template <> __device__ __forceinline__ __half st<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 st<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// 0 none, 1 QuickGELU (x * sigmoid(1.702 x)), 2 GELU (erf), 3 ReLU, 4 GELU (tanh).
__device__ __forceinline__ float act(float x, int a) {
    switch (a) {
    case 1: return x * (1.0f / (1.0f + expf(-1.702f * x)));
    case 2: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case 3: return x > 0.0f ? x : 0.0f;
    case 4: return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    default: return x;
    }
}

#define GRID_STRIDE(i, n) for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (u64)gridDim.x * blockDim.x)

// out = act(y + bias[c]), c = (i / inner) % channels.
template <typename T>
__device__ void bias_act(const T *y, const float *bias, T *out, u64 n, u64 channels, u64 inner, int a) {
    GRID_STRIDE(i, n) {
        float v = ld(y[i]) + bias[(i / inner) % channels];
        out[i] = st<T>(act(v, a));
    }
}

// out = act(res + (y + bias[c])).
template <typename T, typename R>
__device__ void bias_add_act(const T *y, const float *bias, const R *res, R *out, u64 n, u64 channels, u64 inner, int a) {
    GRID_STRIDE(i, n) {
        float v = ld(y[i]) + bias[(i / inner) % channels];
        out[i] = st<R>(act(ld(res[i]) + v, a));
    }
}

// qkv [N, L, 3, H, hd] (+ bias [3 H hd]) -> out [3, N, H, L, hd]; q (s = 0) times `scale`.
template <typename T>
__device__ void qkv_split(const T *qkv, const float *bias, T *out, u64 nb, u64 l, u64 h, u64 hd, float scale) {
    const u64 d = h * hd;
    const u64 n = 3 * nb * l * d;
    GRID_STRIDE(o, n) {
        u64 e = o % hd, r = o / hd;
        u64 li = r % l; r /= l;
        u64 hi = r % h; r /= h;
        u64 ni = r % nb;
        u64 s = r / nb;
        u64 col = s * d + hi * hd + e;
        float v = ld(qkv[(ni * l + li) * 3 * d + col]) + bias[col];
        out[o] = st<T>(s == 0 ? v * scale : v);
    }
}

// x [N, g, g, C] -> QuickGELU(bias + sum of the 3x3 taps [9, C] over the zero-padded window).
template <typename T>
__device__ void depthwise_gelu(const T *x, const float *taps, const float *bias, T *out, u64 nb, u64 g, u64 c) {
    const u64 n = nb * g * g * c;
    GRID_STRIDE(o, n) {
        u64 ch = o % c, r = o / c;
        long long j = r % g; r /= g;
        long long i = r % g;
        u64 ni = r / g;
        float acc = bias[ch];
        for (int di = 0; di < 3; di++) {
            long long ii = i + di - 1;
            if (ii < 0 || ii >= (long long)g) continue;
            for (int dj = 0; dj < 3; dj++) {
                long long jj = j + dj - 1;
                if (jj < 0 || jj >= (long long)g) continue;
                acc += taps[(di * 3 + dj) * c + ch] * ld(x[((ni * g + ii) * g + jj) * c + ch]);
            }
        }
        out[o] = st<T>(act(acc, 1));
    }
}

__device__ __forceinline__ float warp_max(float v) {
    for (int m = 16; m > 0; m >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, m, 32));
    return v;
}
__device__ __forceinline__ float warp_sum(float v) {
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffff, v, m, 32);
    return v;
}

// Softmax over rows of `cols`, in f32; `causal` masks column j > (row % cols). Block (32, 4).
template <typename T>
__device__ void softmax(const T *x, T *out, u64 rows, int cols, int causal) {
    u64 row = (u64)blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= rows) return;
    const T *xr = x + row * cols;
    T *orow = out + row * cols;
    int last = causal ? (int)(row % cols) : cols - 1;
    float m = -INFINITY;
    for (int j = threadIdx.x; j <= last; j += 32) m = fmaxf(m, ld(xr[j]));
    m = warp_max(m);
    float s = 0.0f;
    for (int j = threadIdx.x; j <= last; j += 32) s += expf(ld(xr[j]) - m);
    s = warp_sum(s);
    float inv = 1.0f / s;
    for (int j = threadIdx.x; j < cols; j += 32)
        orow[j] = st<T>(j <= last ? expf(ld(xr[j]) - m) * inv : 0.0f);
}

// LayerNorm of f32 rows (two passes: mean, then the centred variance), written in T. Block (32, 4).
template <typename T>
__device__ void layer_norm(const float *x, const float *w, const float *b, T *out, u64 rows, int cols, float eps) {
    u64 row = (u64)blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= rows) return;
    const float *xr = x + row * cols;
    float s = 0.0f;
    for (int j = threadIdx.x; j < cols; j += 32) s += xr[j];
    float mean = warp_sum(s) / cols;
    float q = 0.0f;
    for (int j = threadIdx.x; j < cols; j += 32) { float d = xr[j] - mean; q += d * d; }
    float inv = rsqrtf(warp_sum(q) / cols + eps);
    for (int j = threadIdx.x; j < cols; j += 32)
        out[row * cols + j] = st<T>((xr[j] - mean) * inv * w[j] + b[j]);
}

#define ONE(T, S) \
extern "C" __global__ void pc_bias_act_##S(const T *y, const float *bias, T *out, u64 n, u64 ch, u64 inner, int a) { bias_act<T>(y, bias, out, n, ch, inner, a); } \
extern "C" __global__ void pc_qkv_split_##S(const T *qkv, const float *bias, T *out, u64 nb, u64 l, u64 h, u64 hd, float scale) { qkv_split<T>(qkv, bias, out, nb, l, h, hd, scale); } \
extern "C" __global__ void pc_depthwise_gelu_##S(const T *x, const float *taps, const float *bias, T *out, u64 nb, u64 g, u64 c) { depthwise_gelu<T>(x, taps, bias, out, nb, g, c); } \
extern "C" __global__ void pc_softmax_##S(const T *x, T *out, u64 rows, int cols, int causal) { softmax<T>(x, out, rows, cols, causal); } \
extern "C" __global__ void pc_layer_norm_##S(const float *x, const float *w, const float *b, T *out, u64 rows, int cols, float eps) { layer_norm<T>(x, w, b, out, rows, cols, eps); }
ONE(float, f32)
ONE(__half, f16)
ONE(__nv_bfloat16, bf16)

#define TWO(T, S, R, SR) \
extern "C" __global__ void pc_bias_add_act_##S##_##SR(const T *y, const float *bias, const R *res, R *out, u64 n, u64 ch, u64 inner, int a) { bias_add_act<T, R>(y, bias, res, out, n, ch, inner, a); }
TWO(float, f32, float, f32)
TWO(__half, f16, float, f32)
TWO(__nv_bfloat16, bf16, float, f32)
TWO(__half, f16, __half, f16)
TWO(__nv_bfloat16, bf16, __nv_bfloat16, bf16)
