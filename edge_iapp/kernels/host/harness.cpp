// CPU harness: compiles the kernels' __host__ __device__ logic (iapp_common.cu) with g++
// into a shared library that the tests load with ctypes and compare to the reference
// preprocessing. Each host_* function does what the corresponding kernels do, pixel by
// pixel, with the same per-pixel functions; only the launch glue differs.
//
// Build: g++ -std=c++17 -O2 -fPIC -shared -ffp-contract=off harness.cpp -o libiapp_host.so

#include <cmath>
#include <cstdint>
#include <vector>

#define __host__
#define __device__
#define __global__

#include "../iapp_common.cu"

extern "C" {

int host_max_grid() { return IAPP_MAX_GRID; }

// iapp_global_canvas + its per-image sums.
void host_global_canvas(const iapp_u8* crops, const long long* offsets, const int* shapes,
                        const int* backgrounds, int n, int s, int canvas, int normalize,
                        iapp_u8* global_u8, unsigned long long* sums) {
    for (int k = 0; k < n; ++k) {
        unsigned long long sum = 0;
        for (int t = 0; t < s * s; ++t) {
            iapp_u8 p = iapp_global_pixel(crops + offsets[k], shapes[2 * k], shapes[2 * k + 1],
                                          backgrounds[k], normalize, canvas, s, t / s, t % s);
            global_u8[(long long)k * s * s + t] = p;
            sum += p;
        }
        sums[k] = sum;
    }
}

// iapp_erode + iapp_dilate_box + iapp_object_zoom.
void host_object_stage(const iapp_u8* global_u8, const unsigned long long* sums, int n, int s,
                       int mode, int k_size, int margin, iapp_u8* eroded, iapp_u8* mask,
                       iapp_u8* object_u8, int* out_boxes, iapp_u8* fallback) {
    for (int k = 0; k < n; ++k) {
        long long base = (long long)k * s * s;
        for (int t = 0; t < s * s; ++t)
            eroded[base + t] = (iapp_u8)iapp_eroded(global_u8 + base, sums[k], s, mode, k_size,
                                                    t / s, t % s);
        int inclusive[4] = {0x7fffffff, 0x7fffffff, -1, -1};
        for (int t = 0; t < s * s; ++t) {
            int y = t / s, x = t % s;
            int m = iapp_dilated(eroded + base, s, k_size, y, x);
            mask[base + t] = (iapp_u8)m;
            if (m) {
                inclusive[0] = y < inclusive[0] ? y : inclusive[0];
                inclusive[1] = x < inclusive[1] ? x : inclusive[1];
                inclusive[2] = y > inclusive[2] ? y : inclusive[2];
                inclusive[3] = x > inclusive[3] ? x : inclusive[3];
            }
        }
        int* box = out_boxes + 4 * k;
        int has_box = iapp_grow_box(inclusive, margin, s, box);
        fallback[k] = (iapp_u8)(has_box ? 0 : 1);
        for (int t = 0; t < s * s; ++t)
            object_u8[base + t] = iapp_zoom_pixel(global_u8 + base, mask + base, box, has_box, s,
                                                  t / s, t % s);
    }
}

// iapp_part_select + iapp_part_zoom.
int host_part_stage(const void* maps, int maps_half, int n, int h, int w, int s,
                    const iapp_u8* object_u8, iapp_u8* part_masks, int* out_boxes,
                    iapp_u8* fallback, iapp_u8* part_u8) {
    if (h * w > IAPP_MAX_GRID || h < 1 || w < 1) return -1;
    std::vector<short> scratch(2 * h * w);
    for (int k = 0; k < n; ++k) {
        long long offset = (long long)k * 2 * h * w;
        const void* mine = maps_half ? (const void*)((const iapp_half_bits*)maps + offset)
                                     : (const void*)((const float*)maps + offset);
        int* box = out_boxes + 4 * k;
        int has_box = iapp_part_select(mine, maps_half, h, w, s, part_masks + (long long)k * h * w,
                                       box, scratch.data());
        fallback[k] = (iapp_u8)(has_box ? 0 : 1);
        long long base = (long long)k * s * s;
        for (int t = 0; t < s * s; ++t)
            part_u8[base + t] = iapp_zoom_pixel(object_u8 + base, nullptr, box, has_box, s, t / s,
                                                t % s);
    }
    return 0;
}

// The network-input conversion of the kernels' iapp_store_input.
void host_network_input(const iapp_u8* images, long long count, float* out_f32,
                        iapp_half_bits* out_f16) {
    for (long long i = 0; i < count; ++i) {
        float v = iapp_unit(images[i]);
        out_f32[i] = v;
        out_f16[i] = iapp_float_to_half_bits(v);
    }
}

void host_float_to_half(const float* values, long long count, iapp_half_bits* out) {
    for (long long i = 0; i < count; ++i) out[i] = iapp_float_to_half_bits(values[i]);
}

double host_pairwise_sum(const double* values, int count) {
    IappSeq seq;
    seq.data = values;
    seq.kind = 2;
    seq.base = 0;
    return iapp_pairwise_sum(seq, count);
}

// ---- Kernel emulators: the exact signatures of kernels.cu, every (image, pixel) visited in
// turn, reductions done sequentially. Driven through launcher.pack_args by the tests'
// emulated KernelModule, they check the Python launch glue (argument order, buffer
// layout) of backends/tensorrt/device_preprocess.py without a GPU.

static void emu_store(void* out, int out_half, long long idx, iapp_u8 p) {
    float v = iapp_unit(p);
    if (out_half) ((iapp_half_bits*)out)[idx] = iapp_float_to_half_bits(v);
    else ((float*)out)[idx] = v;
}

void emu_iapp_reset(unsigned long long* sums, int* boxes, int n) {
    for (int k = 0; k < n; ++k) {
        sums[k] = 0ULL;
        boxes[4 * k + 0] = 0x7fffffff;
        boxes[4 * k + 1] = 0x7fffffff;
        boxes[4 * k + 2] = -1;
        boxes[4 * k + 3] = -1;
    }
}

void emu_iapp_global_canvas(const iapp_u8* crops, const long long* offsets, const int* shapes,
                            const int* backgrounds, int n, int s, int canvas, int normalize,
                            iapp_u8* global_u8, void* global_in, int out_half,
                            unsigned long long* sums) {
    for (int k = 0; k < n; ++k)
        for (int t = 0; t < s * s; ++t) {
            iapp_u8 p = iapp_global_pixel(crops + offsets[k], shapes[2 * k], shapes[2 * k + 1],
                                          backgrounds[k], normalize, canvas, s, t / s, t % s);
            long long idx = (long long)k * s * s + t;
            global_u8[idx] = p;
            emu_store(global_in, out_half, idx, p);
            sums[k] += p;
        }
}

void emu_iapp_erode(const iapp_u8* global_u8, const unsigned long long* sums, int n, int s,
                    int mode, int k_size, iapp_u8* eroded) {
    for (int k = 0; k < n; ++k)
        for (int t = 0; t < s * s; ++t)
            eroded[(long long)k * s * s + t] = (iapp_u8)iapp_eroded(
                global_u8 + (long long)k * s * s, sums[k], s, mode, k_size, t / s, t % s);
}

void emu_iapp_dilate_box(const iapp_u8* eroded, int n, int s, int k_size, iapp_u8* mask,
                         int* boxes) {
    for (int k = 0; k < n; ++k)
        for (int t = 0; t < s * s; ++t) {
            int y = t / s, x = t % s;
            int m = iapp_dilated(eroded + (long long)k * s * s, s, k_size, y, x);
            mask[(long long)k * s * s + t] = (iapp_u8)m;
            if (m) {
                int* b = boxes + 4 * k;
                b[0] = y < b[0] ? y : b[0];
                b[1] = x < b[1] ? x : b[1];
                b[2] = y > b[2] ? y : b[2];
                b[3] = x > b[3] ? x : b[3];
            }
        }
}

void emu_iapp_object_zoom(const iapp_u8* global_u8, const iapp_u8* mask, const int* boxes, int n,
                          int s, int margin, iapp_u8* object_u8, void* object_in, int out_half,
                          int* out_boxes, iapp_u8* fallback) {
    for (int k = 0; k < n; ++k) {
        int box[4];
        int has_box = iapp_grow_box(boxes + 4 * k, margin, s, box);
        for (int c = 0; c < 4; ++c) out_boxes[4 * k + c] = box[c];
        fallback[k] = (iapp_u8)(has_box ? 0 : 1);
        long long base = (long long)k * s * s;
        for (int t = 0; t < s * s; ++t) {
            iapp_u8 p = iapp_zoom_pixel(global_u8 + base, mask + base, box, has_box, s, t / s,
                                        t % s);
            object_u8[base + t] = p;
            emu_store(object_in, out_half, base + t, p);
        }
    }
}

void emu_iapp_part_select(const void* maps, int maps_half, int n, int h, int w, int s,
                          iapp_u8* part_masks, int* out_boxes, iapp_u8* fallback,
                          short* scratch) {
    for (int k = 0; k < n; ++k) {
        long long offset = (long long)k * 2 * h * w;
        const void* mine = maps_half ? (const void*)((const iapp_half_bits*)maps + offset)
                                     : (const void*)((const float*)maps + offset);
        int box[4];
        int has_box = iapp_part_select(mine, maps_half, h, w, s,
                                       part_masks + (long long)k * h * w, box,
                                       scratch + (long long)k * 2 * h * w);
        for (int c = 0; c < 4; ++c) out_boxes[4 * k + c] = box[c];
        fallback[k] = (iapp_u8)(has_box ? 0 : 1);
    }
}

void emu_iapp_part_zoom(const iapp_u8* object_u8, const int* boxes, const iapp_u8* fallback,
                        int n, int s, iapp_u8* part_u8, void* part_in, int out_half) {
    for (int k = 0; k < n; ++k) {
        long long base = (long long)k * s * s;
        for (int t = 0; t < s * s; ++t) {
            iapp_u8 p = iapp_zoom_pixel(object_u8 + base, nullptr, boxes + 4 * k,
                                        fallback[k] ? 0 : 1, s, t / s, t % s);
            part_u8[base + t] = p;
            emu_store(part_in, out_half, base + t, p);
        }
    }
}

}  // extern "C"
