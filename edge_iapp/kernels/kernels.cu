// Preprocessing kernels: thin launch wrappers around iapp_common.cu (which launcher.py
// puts in front of this file). One thread per output pixel, blockIdx.y = image; the
// per-image reductions (grey sum, object box) go through shared memory, then one
// atomic per block. No #include: NVRTC has no include path.
//
// Object stage, in order on one stream:
//   iapp_reset -> iapp_global_canvas -> iapp_erode -> iapp_dilate_box -> iapp_object_zoom
// Part stage (after the object engine wrote part_maps):
//   iapp_part_select -> iapp_part_zoom
// Network inputs are written as (N, 1, S, S) float32 (out_half = 0) or IEEE half
// (out_half = 1), value = uint8 / 255.

#define IAPP_BLOCK 256

__device__ inline void iapp_store_input(void* out, int out_half, long long idx, iapp_u8 p) {
    float v = iapp_unit(p);
    if (out_half) {
        ((iapp_half_bits*)out)[idx] = iapp_float_to_half_bits(v);
    } else {
        ((float*)out)[idx] = v;
    }
}

extern "C" __global__ void iapp_reset(unsigned long long* sums, int* boxes, int n) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    sums[k] = 0ULL;
    boxes[4 * k + 0] = 0x7fffffff;
    boxes[4 * k + 1] = 0x7fffffff;
    boxes[4 * k + 2] = -1;
    boxes[4 * k + 3] = -1;
}

// crops: all crops packed; offsets[k] = byte offset of crop k; shapes[2k], shapes[2k+1] = h, w.
extern "C" __global__ void iapp_global_canvas(const iapp_u8* crops, const long long* offsets,
                                              const int* shapes, const int* backgrounds, int n,
                                              int s, int canvas, int normalize, iapp_u8* global_u8,
                                              void* global_in, int out_half,
                                              unsigned long long* sums) {
    __shared__ unsigned int partial[IAPP_BLOCK];
    int k = blockIdx.y;
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned int value = 0;
    if (k < n && t < s * s) {
        iapp_u8 p = iapp_global_pixel(crops + offsets[k], shapes[2 * k], shapes[2 * k + 1],
                                      backgrounds[k], normalize, canvas, s, t / s, t % s);
        long long idx = (long long)k * s * s + t;
        global_u8[idx] = p;
        iapp_store_input(global_in, out_half, idx, p);
        value = p;
    }
    partial[threadIdx.x] = value;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0 && k < n) atomicAdd(&sums[k], (unsigned long long)partial[0]);
}

extern "C" __global__ void iapp_erode(const iapp_u8* global_u8, const unsigned long long* sums,
                                      int n, int s, int mode, int k_size, iapp_u8* eroded) {
    int k = blockIdx.y;
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n || t >= s * s) return;
    const iapp_u8* img = global_u8 + (long long)k * s * s;
    eroded[(long long)k * s * s + t] = (iapp_u8)iapp_eroded(img, sums[k], s, mode, k_size, t / s,
                                                            t % s);
}

// boxes: inclusive (min y, min x, max y, max x) per image, reset by iapp_reset.
extern "C" __global__ void iapp_dilate_box(const iapp_u8* eroded, int n, int s, int k_size,
                                           iapp_u8* mask, int* boxes) {
    __shared__ int box[4];
    int k = blockIdx.y;
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (threadIdx.x == 0) {
        box[0] = 0x7fffffff;
        box[1] = 0x7fffffff;
        box[2] = -1;
        box[3] = -1;
    }
    __syncthreads();
    if (k < n && t < s * s) {
        int y = t / s, x = t % s;
        int m = iapp_dilated(eroded + (long long)k * s * s, s, k_size, y, x);
        mask[(long long)k * s * s + t] = (iapp_u8)m;
        if (m) {
            atomicMin(&box[0], y);
            atomicMin(&box[1], x);
            atomicMax(&box[2], y);
            atomicMax(&box[3], x);
        }
    }
    __syncthreads();
    if (threadIdx.x == 0 && k < n && box[2] >= 0) {
        atomicMin(&boxes[4 * k + 0], box[0]);
        atomicMin(&boxes[4 * k + 1], box[1]);
        atomicMax(&boxes[4 * k + 2], box[2]);
        atomicMax(&boxes[4 * k + 3], box[3]);
    }
}

// out_boxes: end-exclusive grown box per image; fallback[k] = 1 when the mask was empty.
extern "C" __global__ void iapp_object_zoom(const iapp_u8* global_u8, const iapp_u8* mask,
                                            const int* boxes, int n, int s, int margin,
                                            iapp_u8* object_u8, void* object_in, int out_half,
                                            int* out_boxes, iapp_u8* fallback) {
    int k = blockIdx.y;
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n || t >= s * s) return;
    int box[4];
    int has_box = iapp_grow_box(boxes + 4 * k, margin, s, box);
    if (t == 0) {
        for (int c = 0; c < 4; ++c) out_boxes[4 * k + c] = box[c];
        fallback[k] = (iapp_u8)(has_box ? 0 : 1);
    }
    long long base = (long long)k * s * s;
    iapp_u8 p = iapp_zoom_pixel(global_u8 + base, mask + base, box, has_box, s, t / s, t % s);
    object_u8[base + t] = p;
    iapp_store_input(object_in, out_half, base + t, p);
}

// One thread per image: part mask, largest 8-connected region, box on the object image.
// maps: (N, 2, h, w) float32 (maps_half = 0) or half; part_masks: (N, h, w) 0/1;
// scratch: N * 2 * h * w shorts.
extern "C" __global__ void iapp_part_select(const void* maps, int maps_half, int n, int h, int w,
                                            int s, iapp_u8* part_masks, int* out_boxes,
                                            iapp_u8* fallback, short* scratch) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    long long offset = (long long)k * 2 * h * w;
    const void* mine = maps_half ? (const void*)((const iapp_half_bits*)maps + offset)
                                 : (const void*)((const float*)maps + offset);
    int box[4];
    int has_box = iapp_part_select(mine, maps_half, h, w, s, part_masks + (long long)k * h * w,
                                   box, scratch + (long long)k * 2 * h * w);
    for (int c = 0; c < 4; ++c) out_boxes[4 * k + c] = box[c];
    fallback[k] = (iapp_u8)(has_box ? 0 : 1);
}

extern "C" __global__ void iapp_part_zoom(const iapp_u8* object_u8, const int* boxes,
                                          const iapp_u8* fallback, int n, int s,
                                          iapp_u8* part_u8, void* part_in, int out_half) {
    int k = blockIdx.y;
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n || t >= s * s) return;
    long long base = (long long)k * s * s;
    iapp_u8 p = iapp_zoom_pixel(object_u8 + base, (const iapp_u8*)0, boxes + 4 * k,
                                fallback[k] ? 0 : 1, s, t / s, t % s);
    part_u8[base + t] = p;
    iapp_store_input(part_in, out_half, base + t, p);
}
