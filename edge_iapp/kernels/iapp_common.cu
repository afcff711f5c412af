// Per-pixel and per-image logic of the preprocessing kernels.
//
// Compiled twice: by NVRTC for the GPU (launcher.py puts this file before kernels.cu) and
// by g++ for the CPU (kernels/host/harness.cpp defines __host__/__device__ away), where the
// tests compare it to the reference in edge_iapp/preprocess. No #include anywhere: NVRTC
// has no include path.
//
// The specification is edge_iapp/preprocess: sampling.place (one resampling rule),
// global_canvas, object_aware, part_aware. Every float32 operation below is written as an
// explicitly rounded add/sub/mul/div in the reference's order, so that FMA contraction
// cannot change a result: pixels come out bit-identical to NumPy, masks too.

#define IAPP_BACKGROUND 255
#define IAPP_UPPER_LIMIT 254
#define IAPP_MAX_GRID 1024  // h*w of the part-map grid handled by one thread (4x4 at 128 px)

typedef unsigned char iapp_u8;
typedef unsigned short iapp_half_bits;

#ifdef __CUDA_ARCH__
#define IAPP_ADD(a, b) __fadd_rn((a), (b))
#define IAPP_SUB(a, b) __fsub_rn((a), (b))
#define IAPP_MUL(a, b) __fmul_rn((a), (b))
#define IAPP_DIV(a, b) __fdiv_rn((a), (b))
#define IAPP_DADD(a, b) __dadd_rn((a), (b))
// The per-image part functions run on one thread per image: keeping them out of line
// makes the module ~2.5x smaller and NVRTC ~10x faster, at no cost that matters.
#define IAPP_NOINLINE __noinline__
#else
// The host harness is compiled with -ffp-contract=off and SSE maths (x86-64 default).
#define IAPP_ADD(a, b) ((float)(a) + (float)(b))
#define IAPP_SUB(a, b) ((float)(a) - (float)(b))
#define IAPP_MUL(a, b) ((float)(a) * (float)(b))
#define IAPP_DIV(a, b) ((float)(a) / (float)(b))
#define IAPP_DADD(a, b) ((double)(a) + (double)(b))
#define IAPP_NOINLINE
#endif

// ---------------------------------------------------------------- geometry

// Where a source lands in the square output: output pixels per source pixel and the
// output position of the source's top-left corner (pixel edges).
struct IappPlace {
    float scale;
    float top;
    float left;
};

// global_canvas.canvas_geometry: centred on a canvas x canvas square, shrunk only when the
// crop's longer side exceeds the canvas, sampled straight to out_size.
__host__ __device__ inline IappPlace iapp_canvas_geometry(int h, int w, int canvas, int out_size,
                                                          int* shrunk) {
    int longest = h > w ? h : w;
    *shrunk = longest > canvas ? 1 : 0;
    IappPlace p;
    p.scale = IAPP_DIV((float)out_size, (float)(*shrunk ? longest : canvas));
    p.top = IAPP_DIV(IAPP_SUB((float)out_size, IAPP_MUL((float)h, p.scale)), 2.0f);
    p.left = IAPP_DIV(IAPP_SUB((float)out_size, IAPP_MUL((float)w, p.scale)), 2.0f);
    return p;
}

// sampling.zoom_boxes: a bh x bw crop fitted aspect-kept and centred into out_size.
__host__ __device__ inline IappPlace iapp_zoom_geometry(int bh, int bw, int out_size) {
    IappPlace p;
    p.scale = IAPP_DIV((float)out_size, (float)(bh > bw ? bh : bw));
    p.top = IAPP_DIV(IAPP_SUB((float)out_size, IAPP_MUL((float)bh, p.scale)), 2.0f);
    p.left = IAPP_DIV(IAPP_SUB((float)out_size, IAPP_MUL((float)bw, p.scale)), 2.0f);
    return p;
}

// Source coordinate of output index i: (i + 0.5 - origin) / scale - 0.5.
__host__ __device__ inline float iapp_coord(int i, float origin, float scale) {
    return IAPP_SUB(IAPP_DIV(IAPP_SUB(IAPP_ADD((float)i, 0.5f), origin), scale), 0.5f);
}

// Round half up and clip to 0..255 (sampling.round_u8).
__host__ __device__ inline iapp_u8 iapp_round_u8(float v) {
    float r = floorf(IAPP_ADD(v, 0.5f));
    if (!(r > 0.0f)) return 0;  // also catches NaN (cannot happen for finite inputs)
    if (r > 255.0f) return 255;
    return (iapp_u8)(int)r;
}

// Bilinear sampling of output pixel (i, j) from an h x w source read by src(y, x) for
// in-range (y, x); neighbours outside read `fill`. This is sampling.place for one pixel.
template <class Src>
__host__ __device__ inline iapp_u8 iapp_place_pixel(const Src& src, int h, int w, IappPlace p,
                                                    float fill, int i, int j) {
    float v = iapp_coord(i, p.top, p.scale);
    float u = iapp_coord(j, p.left, p.scale);
    float vf = floorf(v);
    float uf = floorf(u);
    float fy = IAPP_SUB(v, vf);
    float fx = IAPP_SUB(u, uf);
    int y0 = (int)vf;
    int x0 = (int)uf;
    int y1 = y0 + 1;
    int x1 = x0 + 1;
    bool ya = y0 >= 0 && y0 < h, yb = y1 >= 0 && y1 < h;
    bool xa = x0 >= 0 && x0 < w, xb = x1 >= 0 && x1 < w;
    float p00 = (ya && xa) ? src(y0, x0) : fill;
    float p01 = (ya && xb) ? src(y0, x1) : fill;
    float p10 = (yb && xa) ? src(y1, x0) : fill;
    float p11 = (yb && xb) ? src(y1, x1) : fill;
    float gx = IAPP_SUB(1.0f, fx);
    float gy = IAPP_SUB(1.0f, fy);
    float top_row = IAPP_ADD(IAPP_MUL(p00, gx), IAPP_MUL(p01, fx));
    float bottom_row = IAPP_ADD(IAPP_MUL(p10, gx), IAPP_MUL(p11, fx));
    return iapp_round_u8(IAPP_ADD(IAPP_MUL(top_row, gy), IAPP_MUL(bottom_row, fy)));
}

// ---------------------------------------------------------------- global canvas

// global_canvas.level_gain: maps the crop's background level to 255 (1 when disabled).
__host__ __device__ inline float iapp_level_gain(int background, int normalize) {
    if (!normalize || background <= 0 || background >= IAPP_BACKGROUND) return 1.0f;
    return IAPP_DIV((float)IAPP_BACKGROUND, (float)background);
}

// A crop with its level gain applied on read: min(p * gain, 255).
struct IappLevelSrc {
    const iapp_u8* crop;
    int w;
    float gain;
    __host__ __device__ float operator()(int y, int x) const {
        float v = IAPP_MUL((float)crop[y * w + x], gain);
        return v < 255.0f ? v : 255.0f;
    }
};

// One pixel of the global image of an h x w crop.
__host__ __device__ inline iapp_u8 iapp_global_pixel(const iapp_u8* crop, int h, int w,
                                                     int background, int normalize, int canvas,
                                                     int out_size, int i, int j) {
    int shrunk;
    IappPlace p = iapp_canvas_geometry(h, w, canvas, out_size, &shrunk);
    IappLevelSrc src;
    src.crop = crop;
    src.w = w;
    src.gain = iapp_level_gain(background, normalize);
    return iapp_place_pixel(src, h, w, p, (float)IAPP_BACKGROUND, i, j);
}

// ---------------------------------------------------------------- object mask

// Eq. 3 in integer arithmetic: p > mean is p * npix > sum.
// mode 0 = "paper" (mean < p < 254), 1 = "foreground" (p <= mean and p < 254).
__host__ __device__ inline int iapp_threshold(int p, unsigned long long sum, int npix, int mode) {
    if (p >= IAPP_UPPER_LIMIT) return 0;
    unsigned long long scaled = (unsigned long long)p * (unsigned long long)npix;
    return mode == 0 ? (scaled > sum ? 1 : 0) : (scaled <= sum ? 1 : 0);
}

// Erosion of the thresholded S x S image at (i, j) with a k x k square; outside ignored.
__host__ __device__ inline int iapp_eroded(const iapp_u8* img, unsigned long long sum, int s,
                                           int mode, int k, int i, int j) {
    int r = k / 2;
    for (int y = i - r; y <= i + r; ++y) {
        if (y < 0 || y >= s) continue;
        for (int x = j - r; x <= j + r; ++x) {
            if (x < 0 || x >= s) continue;
            if (!iapp_threshold(img[y * s + x], sum, s * s, mode)) return 0;
        }
    }
    return 1;
}

// Dilation of an S x S 0/1 mask at (i, j) with a k x k square; outside ignored.
__host__ __device__ inline int iapp_dilated(const iapp_u8* eroded, int s, int k, int i, int j) {
    int r = k / 2;
    for (int y = i - r; y <= i + r; ++y) {
        if (y < 0 || y >= s) continue;
        for (int x = j - r; x <= j + r; ++x) {
            if (x < 0 || x >= s) continue;
            if (eroded[y * s + x]) return 1;
        }
    }
    return 0;
}

// Box of the object mask: inclusive (min y, min x, max y, max x), max y < 0 when empty;
// grown by the margin and clipped, end-exclusive, into box[4]. Returns 0 when empty.
__host__ __device__ inline int iapp_grow_box(const int* inclusive, int margin, int s, int* box) {
    if (inclusive[2] < 0) {
        box[0] = 0;
        box[1] = 0;
        box[2] = s;
        box[3] = s;
        return 0;
    }
    int y0 = inclusive[0] - margin, x0 = inclusive[1] - margin;
    int y1 = inclusive[2] + 1 + margin, x1 = inclusive[3] + 1 + margin;
    box[0] = y0 > 0 ? y0 : 0;
    box[1] = x0 > 0 ? x0 : 0;
    box[2] = y1 < s ? y1 : s;
    box[3] = x1 < s ? x1 : s;
    return 1;
}

// Source of a zoom: an image inside a box, optionally masked (outside the mask: 255).
struct IappBoxSrc {
    const iapp_u8* img;
    const iapp_u8* mask;  // may be null
    int s;
    int y0;
    int x0;
    __host__ __device__ float operator()(int y, int x) const {
        int idx = (y0 + y) * s + (x0 + x);
        if (mask && !mask[idx]) return (float)IAPP_BACKGROUND;
        return (float)img[idx];
    }
};

// One pixel of a zoom of `box` (end-exclusive) of an S x S image to S x S; with
// `has_box` == 0 the image itself (the fallback of an empty mask).
__host__ __device__ inline iapp_u8 iapp_zoom_pixel(const iapp_u8* img, const iapp_u8* mask,
                                                   const int* box, int has_box, int s, int i,
                                                   int j) {
    if (!has_box) return img[i * s + j];
    int bh = box[2] - box[0], bw = box[3] - box[1];
    IappBoxSrc src;
    src.img = img;
    src.mask = mask;
    src.s = s;
    src.y0 = box[0];
    src.x0 = box[1];
    return iapp_place_pixel(src, bh, bw, iapp_zoom_geometry(bh, bw, s), (float)IAPP_BACKGROUND,
                            i, j);
}

// ---------------------------------------------------------------- network input

__host__ __device__ inline float iapp_half_bits_to_float(iapp_half_bits h) {
#ifdef __CUDA_ARCH__
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    unsigned int sign = (h >> 15) & 1u, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    float v;
    if (exp == 0) {
        v = ldexpf((float)mant, -24);
    } else if (exp == 31) {
        v = mant ? __builtin_nanf("") : __builtin_inff();
    } else {
        v = ldexpf((float)(mant | 0x400u), (int)exp - 25);
    }
    return sign ? -v : v;
#endif
}

// float32 -> IEEE half, round to nearest even (what a typed fp16 engine input holds).
__host__ __device__ inline iapp_half_bits iapp_float_to_half_bits(float f) {
#ifdef __CUDA_ARCH__
    iapp_half_bits h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#else
    unsigned int x;
    __builtin_memcpy(&x, &f, 4);
    unsigned int sign = (x >> 16) & 0x8000u;
    unsigned int absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) return (iapp_half_bits)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
    if (absx >= 0x477ff000u) return (iapp_half_bits)(sign | 0x7c00u);  // rounds to infinity
    int exp = (int)(absx >> 23) - 127;
    unsigned int mant = (absx & 0x7fffffu) | 0x800000u;
    if (exp < -24) {
        // below half the smallest subnormal (2^-25 rounds to even = 0)
        if (exp == -25 && (absx & 0x7fffffu)) return (iapp_half_bits)(sign | 1u);
        return (iapp_half_bits)sign;
    }
    int shift = exp >= -14 ? 13 : 13 + (-14 - exp);  // subnormals lose more bits
    unsigned int kept = mant >> shift;
    unsigned int rest = mant & ((1u << shift) - 1u);
    unsigned int halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (kept & 1u))) kept += 1u;
    unsigned int bits;
    if (exp >= -14) {
        // kept holds the implicit bit at 1 << 10; a carry to 1 << 11 bumps the exponent
        bits = ((unsigned int)(exp + 15) << 10) + (kept - 0x400u);
    } else {
        bits = kept;  // subnormal (a carry to 0x400 becomes the smallest normal, correctly)
    }
    return (iapp_half_bits)(sign | bits);
#endif
}

// network_input: uint8 / 255 as float32 (a true division, as NumPy does).
__host__ __device__ inline float iapp_unit(iapp_u8 p) { return IAPP_DIV((float)p, 255.0f); }

// ---------------------------------------------------------------- part stage

// A read-only sequence of numbers read as double: float32, half bits or float64.
struct IappSeq {
    const void* data;
    int kind;  // 0 = float32, 1 = half, 2 = float64
    int base;
    __host__ __device__ double operator[](int i) const {
        int t = base + i;
        if (kind == 1) return (double)iapp_half_bits_to_float(((const iapp_half_bits*)data)[t]);
        if (kind == 2) return ((const double*)data)[t];
        return (double)((const float*)data)[t];
    }
    __host__ __device__ IappSeq shifted(int m) const {
        IappSeq out = *this;
        out.base += m;
        return out;
    }
};

// NumPy's pairwise summation (numpy/_core/src/umath/loops_utils.h.src) of n doubles,
// so the float64 mean equals the reference's bit for bit even when the sum is inexact.
// The leaf handles n <= 128; the recursion (halving to multiples of 8) is unrolled in
// four levels, enough for n <= IAPP_MAX_GRID, because device recursion needs a stack.
// Values are read in place: no per-thread copy (local memory is reserved per thread).
__host__ __device__ IAPP_NOINLINE double iapp_pairwise_leaf(IappSeq a, int n) {
    if (n < 8) {
        double res = 0.0;
        for (int i = 0; i < n; ++i) res = IAPP_DADD(res, a[i]);
        return res;
    }
    double r[8];
    for (int k = 0; k < 8; ++k) r[k] = a[k];
    int i;
    for (i = 8; i < n - (n % 8); i += 8) {
        for (int k = 0; k < 8; ++k) r[k] = IAPP_DADD(r[k], a[i + k]);
    }
    double res = IAPP_DADD(IAPP_DADD(IAPP_DADD(r[0], r[1]), IAPP_DADD(r[2], r[3])),
                           IAPP_DADD(IAPP_DADD(r[4], r[5]), IAPP_DADD(r[6], r[7])));
    for (; i < n; ++i) res = IAPP_DADD(res, a[i]);
    return res;
}

__host__ __device__ inline int iapp_pairwise_split(int n) { return n / 2 - (n / 2) % 8; }

__host__ __device__ inline double iapp_pairwise_2(IappSeq a, int n) {
    if (n <= 128) return iapp_pairwise_leaf(a, n);
    int m = iapp_pairwise_split(n);
    return IAPP_DADD(iapp_pairwise_leaf(a, m), iapp_pairwise_leaf(a.shifted(m), n - m));
}

__host__ __device__ inline double iapp_pairwise_3(IappSeq a, int n) {
    if (n <= 128) return iapp_pairwise_leaf(a, n);
    int m = iapp_pairwise_split(n);
    return IAPP_DADD(iapp_pairwise_2(a, m), iapp_pairwise_2(a.shifted(m), n - m));
}

__host__ __device__ inline double iapp_pairwise_4(IappSeq a, int n) {
    if (n <= 128) return iapp_pairwise_leaf(a, n);
    int m = iapp_pairwise_split(n);
    return IAPP_DADD(iapp_pairwise_3(a, m), iapp_pairwise_3(a.shifted(m), n - m));
}

__host__ __device__ inline double iapp_pairwise_sum(IappSeq a, int n) {
    if (n <= 128) return iapp_pairwise_leaf(a, n);
    int m = iapp_pairwise_split(n);
    return IAPP_DADD(iapp_pairwise_4(a, m), iapp_pairwise_4(a.shifted(m), n - m));
}

// Eq. 10-12 for one image: each of the two (h, w) maps above its own float64 mean,
// intersected. maps points at the image's (2, h, w) block (float32 or half bits).
// Writes mask[h*w] (0/1).
__host__ __device__ IAPP_NOINLINE void iapp_part_mask(const void* maps, int is_half, int h, int w,
                                                      iapp_u8* mask) {
    int n = h * w;
    IappSeq seq;
    seq.data = maps;
    seq.kind = is_half ? 1 : 0;
    seq.base = 0;
    double mean0 = iapp_pairwise_sum(seq, n) / (double)n;
    double mean1 = iapp_pairwise_sum(seq.shifted(n), n) / (double)n;
    for (int t = 0; t < n; ++t) mask[t] = (seq[t] > mean0 && seq[n + t] > mean1) ? 1 : 0;
}

// Largest 8-connected region of an h x w 0/1 mask, in place; ties go to the region met
// first in raster order. label and stack are caller scratch of h*w shorts each (global
// memory on the GPU: big per-thread arrays would reserve local memory for every thread
// the device can hold). Returns the region's area (0 when the mask is empty).
__host__ __device__ IAPP_NOINLINE int iapp_largest_component(iapp_u8* mask, int h, int w,
                                                             short* label, short* stack) {
    int n = h * w;
    for (int t = 0; t < n; ++t) label[t] = -1;
    int best = -1, best_area = 0, next = 0;
    for (int start = 0; start < n; ++start) {
        if (!mask[start] || label[start] >= 0) continue;
        int area = 0, top = 0;
        stack[top++] = (short)start;
        label[start] = (short)next;
        while (top > 0) {
            int t = stack[--top];
            ++area;
            int y = t / w, x = t % w;
            for (int dy = -1; dy <= 1; ++dy) {
                for (int dx = -1; dx <= 1; ++dx) {
                    int yy = y + dy, xx = x + dx;
                    if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                    int q = yy * w + xx;
                    if (mask[q] && label[q] < 0) {
                        label[q] = (short)next;
                        stack[top++] = (short)q;
                    }
                }
            }
        }
        if (area > best_area) {  // strictly larger: the first of equals wins
            best_area = area;
            best = next;
        }
        ++next;
    }
    for (int t = 0; t < n; ++t) mask[t] = (best >= 0 && label[t] == best) ? 1 : 0;
    return best_area;
}

// part_aware.grid_box_to_image: box of the region on the h x w grid scaled outward to
// S x S object-image pixels (end-exclusive). Returns 0 (and the whole image) when empty.
__host__ __device__ inline int iapp_part_box(const iapp_u8* mask, int h, int w, int s, int* box) {
    int y0 = h, x0 = w, y1 = -1, x1 = -1;
    for (int t = 0; t < h * w; ++t) {
        if (!mask[t]) continue;
        int y = t / w, x = t % w;
        y0 = y < y0 ? y : y0;
        x0 = x < x0 ? x : x0;
        y1 = y > y1 ? y : y1;
        x1 = x > x1 ? x : x1;
    }
    if (y1 < 0) {
        box[0] = 0;
        box[1] = 0;
        box[2] = s;
        box[3] = s;
        return 0;
    }
    box[0] = (y0 * s) / h;
    box[1] = (x0 * s) / w;
    box[2] = ((y1 + 1) * s + h - 1) / h;
    box[3] = ((x1 + 1) * s + w - 1) / w;
    return 1;
}

// The whole per-image part selection: mask, largest region, box. mask_out gets h*w bytes.
// scratch: 2*h*w shorts for the region labelling.
__host__ __device__ inline int iapp_part_select(const void* maps, int is_half, int h, int w,
                                                int s, iapp_u8* mask_out, int* box,
                                                short* scratch) {
    iapp_part_mask(maps, is_half, h, w, mask_out);
    iapp_largest_component(mask_out, h, w, scratch, scratch + h * w);
    return iapp_part_box(mask_out, h, w, s, box);
}
