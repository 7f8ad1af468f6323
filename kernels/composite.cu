// Composite of every paste onto its destination, and the cover map, in one launch per batch.
//
// Grid: y strides over the batch's samples, x over the sample's pixels. Each thread starts from the destination
// pixel and walks the sample's pastes in plan order; where paste t's warped mask is set it writes the paste's
// pixel (hard) or (pix * a + cur * (4096 - a) + 2048) >> 12 (feathered, a = alpha), exactly the sequence of
// in-place updates of reference.apply_numpy. It also sets bit t of the pixel's cover words: every later stage
// (occlusion, occluders, order, keypoints, crowd) reads which pastes cover a pixel from the cover map instead of
// the window buffers. Skipped pastes have empty masks, so they neither change a pixel nor set a bit.
#include "ocp_common.cuh"

extern "C" __global__ void ocp_composite(const OcpSample* __restrict__ samples, long long num_samples,
                                         const OcpPaste* __restrict__ pastes,
                                         const unsigned char* __restrict__ win_mask,
                                         const unsigned char* __restrict__ win_pix, const int* __restrict__ alpha,
                                         unsigned char* __restrict__ img_out, unsigned int* __restrict__ cover) {
  for (long long si = blockIdx.y; si < num_samples; si += gridDim.y) {
    const OcpSample S = samples[si];
    const long long W = S.width, hw = S.height * S.width;
    const unsigned char* dst = reinterpret_cast<const unsigned char*>(S.img_in);
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < hw; p += (long long)gridDim.x * blockDim.x) {
      const long long y = p / W, x = p % W;
      long long cur0 = dst[p * 3 + 0], cur1 = dst[p * 3 + 1], cur2 = dst[p * 3 + 2];
      for (long long w = 0; w < S.cover_words; ++w) {
        unsigned int word = 0;
        const long long t_end = ocp_min(S.num_pastes, 32 * (w + 1));
        for (long long t = 32 * w; t < t_end; ++t) {
          const OcpPaste& P = pastes[S.paste_begin + t];
          const long long wx = x - P.win_x, wy = y - P.win_y;
          if (wx < 0 || wx >= P.win_w || wy < 0 || wy >= P.win_h) continue;
          const long long k = P.win_off + wy * P.win_w + wx;
          if (!win_mask[k]) continue;
          word |= 1u << (t & 31);
          const long long p0 = win_pix[k * 3 + 0], p1 = win_pix[k * 3 + 1], p2 = win_pix[k * 3 + 2];
          if (S.blend) {
            const long long a = alpha[k];
            cur0 = ocp_alpha_mix(p0, cur0, a);  // photometric.cuh, shared with the compiled CPU loop
            cur1 = ocp_alpha_mix(p1, cur1, a);
            cur2 = ocp_alpha_mix(p2, cur2, a);
          } else {
            cur0 = p0;
            cur1 = p1;
            cur2 = p2;
          }
        }
        cover[S.cover_off + w * hw + p] = word;
      }
      unsigned char* out = img_out + S.img_out_off + p * 3;
      out[0] = (unsigned char)cur0;
      out[1] = (unsigned char)cur1;
      out[2] = (unsigned char)cur2;
    }
  }
}
