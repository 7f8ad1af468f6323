// Shared definitions of the OC&P CUDA kernels: the batch descriptor structs, integer helpers and block reductions.
//
// Descriptor tables are arrays of structs whose fields are all 64-bit integers, so the host builds them as NumPy
// int64 arrays of shape (n, num_fields) with no padding questions. Device pointers travel as int64 fields too.
// The field lists are mirrored in kernels/apply.py (SAMPLE_FIELDS, PASTE_FIELDS, SLOT_FIELDS);
// tests/test_kernels_compile.py checks that both sides list the same names in the same order.
//
// Conventions every kernel follows:
//   * blockDim.x is a power of two <= OCP_BLOCK (the block reductions need it); 1-D blocks;
//   * grid-stride loops in x (pixels) and in y (pastes / slots / samples), so any grid size is correct;
//   * control flow around __syncthreads() / __syncthreads_or() depends only on block-uniform values;
//   * masks are one byte per pixel (NumPy / CuPy bool), images (H, W, 3) uint8 row-major.
// No system headers: the same text compiles with NVRTC (CuPy), nvcc, and the host emulator (kernels/emulate.h).
#pragma once

#include "geometry.cuh"
#include "photometric.cuh"

#define OCP_BLOCK 256
#define OCP_INT_BIG 0x7fffffff

// One destination sample of the batch (mirrors apply.SAMPLE_FIELDS).
struct OcpSample {
  long long height, width;
  long long paste_begin, num_pastes;  // its pastes: global paste indices [paste_begin, paste_begin + num_pastes)
  long long slot_begin, num_slots;    // its instance slots: num_existing existing rows, then one per paste
  long long num_existing;
  long long crowd_begin, num_crowd;   // its crowd slots (global slot indices)
  long long cover_off, cover_words;   // cover map words: cover[cover_off + w * H * W + pixel], w < cover_words
  long long img_in;                   // device pointer: destination image (H, W, 3) uint8
  long long img_out_off;              // element offset of its output image in the batch image buffer
  long long order_in;                 // device pointer: destination order (num_existing, num_existing) bool, or 0
                                      // (zeros: the reference ignores the input order of an untouched sample)
  long long overlap_off;              // offset of its (num_pastes, num_slots) overlap matrix
  long long blend;                    // 1: feathered paste (alpha buffers valid), 0: hard paste
  long long mode_simple;              // 1: mmdet CopyPaste keep rule, 0: OC&P keep rule
  long long thr_bits;                 // double bits: min_size_occ * sqrt(H * W)
  long long bbox_thr_bits;            // double bits: bbox_occluded_thr
  long long mask_thr_bits;            // double bits: mask_occluded_thr
  long long num_kp;                   // keypoints per instance (0: the sample has none)
  // output layout, filled by the host after the keep flags are known (zero before)
  long long num_out;                  // kept instance rows
  long long row_base;                 // global output row of its first kept instance
  long long plane_base;               // element offset of its first output plane in the mask buffers
  long long crowd_row_base;           // index of its first kept crowd region among all kept crowd regions
  long long crowd_plane_base;         // element offset of its first kept crowd plane in the crowd buffer
  long long order_out_off;            // element offset of its (num_out, num_out) order matrix
  long long kp_out_off;               // element offset of its (num_out, num_kp, 3) keypoints
};

// One paste of the batch, in plan order within its sample (mirrors apply.PASTE_FIELDS).
struct OcpPaste {
  long long sample, time, slot;       // destination sample, position t in plan.pastes, global slot it creates
  long long src_img, src_pitch;       // device pointer to the crop's top-left source pixel; row pitch in pixels
  long long src_mask, mask_pitch;     // device pointer to the crop's top-left source mask byte; row pitch
  long long crop_h, crop_w;
  long long jitter;                   // 1: jittered (warp reads the jitter buffer), 0: warp reads the source
  long long j_colour, j_bright, j_contrast, j_sharp;  // jitter factors in tenths
  long long jit_off;                  // element offset of its (crop_h, crop_w, 3) crop in the jitter buffers
  long long inv_a, inv_b, inv_c, inv_d, inv_e, inv_f;  // PasteGeometry.inv_q16
  long long off_x, off_y;             // canvas top-left in the destination
  long long win_x, win_y, win_w, win_h;  // canvas clipped to the image (win_w or win_h may be 0)
  long long win_off;                  // pixel offset of its window in the window buffers
  long long taps_off, radius;         // Gaussian taps of its sample (radius 0: no feathering)
  long long rep_top, rep_bottom, rep_left, rep_right;  // window sides on the image border (replicate padding)
};

// One row candidate: an existing instance, a paste's instance, or a crowd region (mirrors apply.SLOT_FIELDS).
struct OcpSlot {
  long long sample;
  long long kind;                     // OCP_EXISTING, OCP_PASTED, OCP_CROWD
  long long local;                    // row in the destination's arrays (existing, crowd); t (pasted)
  long long time;                     // -1 (existing, crowd); t (pasted)
  long long paste;                    // global paste index (pasted), -1 otherwise
  long long vis_in, amodal_in, occ_in;  // device pointers of its input planes (existing; crowd uses vis_in);
                                        // occ_in 0: no input occluders (read as zeros)
  long long region_x, region_y, region_w, region_h;  // where its planes can be non-zero (window when pasted)
  long long label, ann_id;
  long long kp_off;                   // element offset of its (num_kp, 3) keypoints in the slot keypoint buffer
};

#define OCP_EXISTING 0
#define OCP_PASTED 1
#define OCP_CROWD 2

// ---- integer helpers: ocp_min, ocp_max, ocp_clamp, ocp_floordiv, ocp_floor_shift (geometry.cuh) ----

__device__ __forceinline__ double ocp_bits_to_double(long long bits) { return __longlong_as_double(bits); }

// ---- image jitter arithmetic: ocp_grey, ocp_blend_floor, ocp_blend_round_even, ocp_round_half_even_div,
// ocp_reflect101 and the per-pixel steps (photometric.cuh, shared with the compiled CPU loop) ----

// ---- cover map: bit t of word t / 32 at a pixel is set iff paste t of the sample wrote that pixel ----

// Any bit of (cover at pixel p) & words[] set?  words: the slot's allowed / later bit mask (cover_words words).
__device__ __forceinline__ bool ocp_cover_any(const unsigned int* cover, const OcpSample& s, long long p,
                                              const unsigned int* words) {
  const long long hw = s.height * s.width;
  for (long long w = 0; w < s.cover_words; ++w) {
    if (cover[s.cover_off + w * hw + p] & words[w]) return true;
  }
  return false;
}

__device__ __forceinline__ bool ocp_cover_all_any(const unsigned int* cover, const OcpSample& s, long long p) {
  const long long hw = s.height * s.width;
  for (long long w = 0; w < s.cover_words; ++w) {
    if (cover[s.cover_off + w * hw + p]) return true;
  }
  return false;
}

__device__ __forceinline__ bool ocp_cover_bit(const unsigned int* cover, const OcpSample& s, long long p, long long t) {
  const long long hw = s.height * s.width;
  return ((cover[s.cover_off + (t >> 5) * hw + p] >> (t & 31)) & 1u) != 0;
}

// ---- block reductions (shared-memory trees; every thread of the block must call them) ----

struct OcpSum {
  __device__ __forceinline__ long long operator()(long long a, long long b) const { return a + b; }
};
struct OcpMin {
  __device__ __forceinline__ long long operator()(long long a, long long b) const { return ocp_min(a, b); }
};
struct OcpMax {
  __device__ __forceinline__ long long operator()(long long a, long long b) const { return ocp_max(a, b); }
};

// One tree reduction for every associative op; the result is returned to every thread of the block.
template <class Op>
__device__ __forceinline__ long long ocp_block_reduce(long long v, long long* sbuf, Op op) {
  sbuf[threadIdx.x] = v;
  __syncthreads();
  for (unsigned int o = blockDim.x >> 1; o > 0; o >>= 1) {
    if (threadIdx.x < o) sbuf[threadIdx.x] = op(sbuf[threadIdx.x], sbuf[threadIdx.x + o]);
    __syncthreads();
  }
  const long long r = sbuf[0];
  __syncthreads();
  return r;
}

__device__ __forceinline__ long long ocp_block_sum(long long v, long long* sbuf) {
  return ocp_block_reduce(v, sbuf, OcpSum());
}
__device__ __forceinline__ long long ocp_block_min(long long v, long long* sbuf) {
  return ocp_block_reduce(v, sbuf, OcpMin());
}
__device__ __forceinline__ long long ocp_block_max(long long v, long long* sbuf) {
  return ocp_block_reduce(v, sbuf, OcpMax());
}

// Tight box accumulated per thread as (min x, min y, max x, max y), reduced over the block and merged into
// box[0..3] (int32, initialised to (BIG, BIG, -1, -1)) by thread 0. Skips the atomics when the block saw nothing.
__device__ __forceinline__ void ocp_block_box_merge(long long x0, long long y0, long long x1, long long y1,
                                                    int* box, long long* sbuf) {
  x0 = ocp_block_min(x0, sbuf);
  y0 = ocp_block_min(y0, sbuf);
  x1 = ocp_block_max(x1, sbuf);
  y1 = ocp_block_max(y1, sbuf);
  if (threadIdx.x == 0 && x1 >= 0) {
    atomicMin(box + 0, (int)x0);
    atomicMin(box + 1, (int)y0);
    atomicMax(box + 2, (int)x1);
    atomicMax(box + 3, (int)y1);
  }
}
