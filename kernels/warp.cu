// Warp of every paste into its destination window, and the feathered alpha of the warped masks.
//
// ocp_warp (one launch per batch): for window pixel (x, y) of paste q, canvas pixel X = win_x - off_x + x,
// Y = win_y - off_y + y; crop coordinate U = a X + b Y + c, V = d X + e Y + f in Q16 (int64). Mask: nearest,
// crop_mask[V >> 16, U >> 16] when inside the crop, else 0. Pixel (only where the mask is set): integer bilinear
// exactly as reference.warp_crop (geometry.cuh's ocp_bilinear_pixel, shared with the compiled CPU loops). The
// identity geometry is the same arithmetic and gives exact copies. Also reduces the tight box of the warped mask
// (window coordinates) into paste_box[4q..4q+3]; an empty box (max x = -1) means the paste is skipped.
//
// ocp_alpha_horizontal / ocp_alpha_vertical (two launches per batch, feathered samples only): the separable
// integer Gaussian of reference.feather_alpha, padded with zeros, or by replication on the sides where the window
// meets the image border. The horizontal pass is only stored for the window's real rows: a padded row is either
// zero or a copy of the first / last row, so the vertical pass reads it through the same row mapping.
//
// Buffers (pixel offset OcpPaste.win_off): win_mask uint8 0/1, win_pix uint8 x3, hbuf int32, alpha int32.
#include "ocp_common.cuh"

extern "C" __global__ void ocp_warp(const OcpPaste* __restrict__ pastes, long long num_pastes,
                                    const unsigned char* __restrict__ jit_b, unsigned char* __restrict__ win_mask,
                                    unsigned char* __restrict__ win_pix, int* __restrict__ paste_box) {
  __shared__ long long sbuf[OCP_BLOCK];
  for (long long q = blockIdx.y; q < num_pastes; q += gridDim.y) {
    const OcpPaste P = pastes[q];
    const unsigned char* img;
    long long pitch;
    if (P.jitter) {
      img = jit_b + P.jit_off;
      pitch = P.crop_w;
    } else {
      img = reinterpret_cast<const unsigned char*>(P.src_img);
      pitch = P.src_pitch;
    }
    const unsigned char* cmask = reinterpret_cast<const unsigned char*>(P.src_mask);
    const long long h = P.crop_h, w = P.crop_w;
    const long long n = P.win_w * P.win_h;
    long long bx0 = OCP_INT_BIG, by0 = OCP_INT_BIG, bx1 = -1, by1 = -1;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
      const long long y = i / P.win_w, x = i % P.win_w;
      const long long X = P.win_x - P.off_x + x, Y = P.win_y - P.off_y + y;  // canvas pixel
      const long long u = P.inv_a * X + P.inv_b * Y + P.inv_c;
      const long long v = P.inv_d * X + P.inv_e * Y + P.inv_f;
      const long long iu = ocp_floor_shift(u, OCP_Q_BITS), iv = ocp_floor_shift(v, OCP_Q_BITS);
      const bool inside = iu >= 0 && iu < w && iv >= 0 && iv < h;
      const bool m = inside && cmask[iv * P.mask_pitch + iu] != 0;
      unsigned char* out = win_pix + (P.win_off + i) * 3;
      win_mask[P.win_off + i] = m ? 1 : 0;
      if (m) {
        ocp_bilinear_pixel(img, pitch * 3, h, w, u, v, out);  // geometry.cuh: the reference's arithmetic
        bx0 = ocp_min(bx0, x);
        by0 = ocp_min(by0, y);
        bx1 = ocp_max(bx1, x);
        by1 = ocp_max(by1, y);
      } else {
        out[0] = out[1] = out[2] = 0;
      }
    }
    ocp_block_box_merge(bx0, by0, bx1, by1, paste_box + 4 * q, sbuf);
  }
}

// Column of the padded mask (padding r on each side) read at padded column j, or -1 for a zero column.
__device__ __forceinline__ long long ocp_pad_index(long long j, long long r, long long n, long long rep_lo,
                                                   long long rep_hi) {
  if (j < r) return rep_lo ? 0 : -1;
  if (j >= r + n) return rep_hi ? n - 1 : -1;
  return j - r;
}

extern "C" __global__ void ocp_alpha_horizontal(const OcpPaste* __restrict__ pastes, long long num_pastes,
                                                const int* __restrict__ taps,
                                                const unsigned char* __restrict__ win_mask, int* __restrict__ hbuf) {
  for (long long q = blockIdx.y; q < num_pastes; q += gridDim.y) {
    const OcpPaste P = pastes[q];
    if (P.radius <= 0) continue;
    const long long r = P.radius, ww = P.win_w, n = P.win_w * P.win_h;
    const int* wt = taps + P.taps_off;
    const unsigned char* m = win_mask + P.win_off;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
      const long long y = i / ww, x = i % ww;
      long long acc = 0;
      for (long long k = 0; k <= 2 * r; ++k) {
        const long long col = ocp_pad_index(x + k, r, ww, P.rep_left, P.rep_right);
        if (col >= 0 && m[y * ww + col]) acc += wt[k];
      }
      hbuf[P.win_off + i] = (int)acc;
    }
  }
}

extern "C" __global__ void ocp_alpha_vertical(const OcpPaste* __restrict__ pastes, long long num_pastes,
                                              const int* __restrict__ taps, const unsigned char* __restrict__ win_mask,
                                              const int* __restrict__ hbuf, int* __restrict__ alpha) {
  for (long long q = blockIdx.y; q < num_pastes; q += gridDim.y) {
    const OcpPaste P = pastes[q];
    if (P.radius <= 0) continue;
    const long long r = P.radius, ww = P.win_w, wh = P.win_h, n = P.win_w * P.win_h;
    const int* wt = taps + P.taps_off;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
      const long long y = i / ww, x = i % ww;
      long long a = 0;
      if (win_mask[P.win_off + i]) {  // alpha * mask: only pixels of the mask matter
        long long acc = 0;
        for (long long k = 0; k <= 2 * r; ++k) {
          const long long row = ocp_pad_index(y + k, r, wh, P.rep_top, P.rep_bottom);
          if (row >= 0) acc += (long long)wt[k] * hbuf[P.win_off + row * ww + x];
        }
        a = ocp_floor_shift(acc + 2048, 12);
      }
      alpha[P.win_off + i] = (int)a;
    }
  }
}
