// Decode of a batch of COCO run-length encodings (uncompressed counts) into row-major (H, W) masks.
//
// COCO RLE: runs over the pixels in column-major order (index x * H + y), alternating 0 and 1, starting with a
// (possibly empty) run of 0. ends = inclusive prefix sum (int64) of all runs of the batch, concatenated
// (cupy.cumsum); run k of instance i ends (exclusively) at ends[off + k] - ends[off - 1]. A pixel's value is the
// parity of the first run whose end lies beyond it: a binary search per pixel. Pixels past the last run are 0.
// Grid: y strides over the instances, x over the instance's pixels (row-major, so the writes coalesce).
// desc: (n, 5) int64 rows (counts offset, number of runs, H, W, output offset in bytes).
#include "ocp_common.cuh"

extern "C" __global__ void ocp_rle_decode(const long long* __restrict__ desc, long long num_masks,
                                          const long long* __restrict__ ends, unsigned char* __restrict__ out) {
  for (long long i = blockIdx.y; i < num_masks; i += gridDim.y) {
    const long long off = desc[5 * i + 0], runs = desc[5 * i + 1];
    const long long H = desc[5 * i + 2], W = desc[5 * i + 3], out_off = desc[5 * i + 4];
    const long long before = off > 0 ? ends[off - 1] : 0;
    const long long hw = H * W;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < hw; p += (long long)gridDim.x * blockDim.x) {
      const long long y = p / W, x = p % W;
      const long long idx = x * H + y;  // column-major position
      long long lo = 0, hi = runs;      // first run k with end(k) > idx
      while (lo < hi) {
        const long long mid = (lo + hi) >> 1;
        if (ends[off + mid] - before > idx) hi = mid;
        else lo = mid + 1;
      }
      out[out_off + p] = (lo < runs) ? (unsigned char)(lo & 1) : 0;
    }
  }
}
