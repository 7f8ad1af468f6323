// Occlusion, drop rule, compaction and every output target, from the cover map written by ocp_composite.
//
// Slots: every existing instance, every paste (whether it turns out skipped or not) and every crowd region of the
// batch is a slot (OcpSlot). Instance slots of all samples come first, crowd slots after, so one prefix sum over
// the keep flags numbers the kept instance rows first and the kept crowd regions after.
//
// Visible mask of slot j at pixel p (the reference's sequence of `vis_j &= ~m` updates, folded):
//   vis(j, p) = vis0(j, p) && !(cover(p) & allowed_j)
// where vis0 is the input mask (existing), bit t of the cover map (paste t), and allowed_j has bit t' set iff
// paste t' comes after j and passes the reference's box test (existing instances: destination box vs window; the
// test cannot matter for pastes, whose box is their tight box). Since masks only lose pixels, "touched" (a paste
// removed at least one visible pixel) is: some pixel of vis0 is covered by an allowed paste.
// The visible planes are not stored per slot: ocp_occlusion_stats reduces them (area, tight box, touched), and
// ocp_emit_planes recomputes them while writing the compacted outputs.
#include "ocp_common.cuh"

// Bits of ocp_emit_planes' `want` (kernels/apply.py: WANT_AMODAL, WANT_OCCLUDER): the optional planes requested.
#define OCP_WANT_AMODAL 1
#define OCP_WANT_OCCLUDER 2

// vis0 and amodal of an instance slot at pixel p.
__device__ __forceinline__ void ocp_slot_pixel(const OcpSlot& L, const OcpSample& S, const unsigned int* cover,
                                               long long p, bool& vis0, bool& amodal) {
  if (L.kind == OCP_PASTED) {
    vis0 = amodal = ocp_cover_bit(cover, S, p, L.time);
  } else if (L.kind == OCP_EXISTING) {
    vis0 = reinterpret_cast<const unsigned char*>(L.vis_in)[p] != 0;
    amodal = reinterpret_cast<const unsigned char*>(L.amodal_in)[p] != 0;
  } else {  // crowd region
    vis0 = reinterpret_cast<const unsigned char*>(L.vis_in)[p] != 0;
    amodal = false;
  }
}

// Grid: y strides over slots, x over the slot's region (whole image; the paste window for pasted slots).
// Outputs (initialised by the host): vis_area, am_area = 0; vis_box, am_box = (BIG, BIG, -1, -1) inclusive
// (min x, min y, max x, max y); touched = 0.
extern "C" __global__ void ocp_occlusion_stats(const OcpSample* __restrict__ samples,
                                               const OcpSlot* __restrict__ slots, long long num_slots,
                                               const unsigned int* __restrict__ cover,
                                               const unsigned int* __restrict__ allowed, long long words,
                                               unsigned long long* __restrict__ vis_area,
                                               unsigned long long* __restrict__ am_area, int* __restrict__ vis_box,
                                               int* __restrict__ am_box, unsigned int* __restrict__ touched) {
  __shared__ long long sbuf[OCP_BLOCK];
  for (long long j = blockIdx.y; j < num_slots; j += gridDim.y) {
    const OcpSlot L = slots[j];
    const OcpSample S = samples[L.sample];
    const unsigned int* aw = allowed + j * words;
    const long long n = L.region_w * L.region_h;
    long long va = 0, aa = 0, tch = 0;
    long long vx0 = OCP_INT_BIG, vy0 = OCP_INT_BIG, vx1 = -1, vy1 = -1;
    long long ax0 = OCP_INT_BIG, ay0 = OCP_INT_BIG, ax1 = -1, ay1 = -1;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
      const long long x = L.region_x + i % L.region_w, y = L.region_y + i / L.region_w;
      const long long p = y * S.width + x;
      bool vis0, am;
      ocp_slot_pixel(L, S, cover, p, vis0, am);
      const bool covered = vis0 && ocp_cover_any(cover, S, p, aw);
      if (covered) tch = 1;
      if (vis0 && !covered) {
        ++va;
        vx0 = ocp_min(vx0, x);
        vy0 = ocp_min(vy0, y);
        vx1 = ocp_max(vx1, x);
        vy1 = ocp_max(vy1, y);
      }
      if (am) {
        ++aa;
        ax0 = ocp_min(ax0, x);
        ay0 = ocp_min(ay0, y);
        ax1 = ocp_max(ax1, x);
        ay1 = ocp_max(ay1, y);
      }
    }
    va = ocp_block_sum(va, sbuf);
    aa = ocp_block_sum(aa, sbuf);
    tch = ocp_block_max(tch, sbuf);
    if (threadIdx.x == 0) {
      if (va) atomicAdd(vis_area + j, (unsigned long long)va);
      if (aa) atomicAdd(am_area + j, (unsigned long long)aa);
      if (tch) atomicOr(touched + j, 1u);
    }
    ocp_block_box_merge(vx0, vy0, vx1, vy1, vis_box + 4 * j, sbuf);
    ocp_block_box_merge(ax0, ay0, ax1, ay1, am_box + 4 * j, sbuf);
  }
}

// overlap[(t, b)] of a sample = amodal mask of paste t meets the amodal mask of instance slot b, for slots b
// created before paste t (existing instances and earlier pastes): the reference's order[a, b] for pasted a.
// Grid: y strides over pastes, x over the sample's instance slots (one block per pair; its threads scan the
// intersection of both tight boxes and stop at the first common pixel). overlap is zero-initialised.
extern "C" __global__ void ocp_overlap(const OcpSample* __restrict__ samples, const OcpPaste* __restrict__ pastes,
                                       long long num_pastes, const OcpSlot* __restrict__ slots,
                                       const unsigned int* __restrict__ cover, const int* __restrict__ am_box,
                                       const int* __restrict__ paste_box, unsigned char* __restrict__ overlap) {
  for (long long q = blockIdx.y; q < num_pastes; q += gridDim.y) {
    const OcpPaste P = pastes[q];
    const OcpSample S = samples[P.sample];
    const int* pb = paste_box + 4 * q;
    if (pb[2] < 0) continue;  // skipped paste: no row, nothing to order
    const long long px0 = P.win_x + pb[0], py0 = P.win_y + pb[1], px1 = P.win_x + pb[2], py1 = P.win_y + pb[3];
    for (long long b = blockIdx.x; b < S.num_slots; b += gridDim.x) {
      const long long j = S.slot_begin + b;
      const OcpSlot L = slots[j];
      if (L.time >= P.time) continue;
      const int* ab = am_box + 4 * j;
      if (ab[2] < 0) continue;
      const long long x0 = ocp_max(px0, ab[0]), y0 = ocp_max(py0, ab[1]);
      const long long x1 = ocp_min(px1, ab[2]), y1 = ocp_min(py1, ab[3]);
      if (x0 > x1 || y0 > y1) continue;
      const long long bw = x1 - x0 + 1, n = bw * (y1 - y0 + 1);
      int found = 0;
      for (long long base = 0; base < n; base += blockDim.x) {  // block-uniform trip count
        const long long i = base + threadIdx.x;
        int hit = 0;
        if (i < n) {
          const long long p = (y0 + i / bw) * S.width + (x0 + i % bw);
          if (ocp_cover_bit(cover, S, p, P.time)) {
            bool vis0, am;
            ocp_slot_pixel(L, S, cover, p, vis0, am);
            hit = am ? 1 : 0;
          }
        }
        if (__syncthreads_or(hit)) {
          found = 1;
          break;
        }
      }
      if (threadIdx.x == 0 && found) overlap[S.overlap_off + P.time * S.num_slots + b] = 1;
    }
  }
}

// Keep rule of reference._keep_rule, one thread per slot. keep[j] in {0, 1}; flags[j] = keep | (valid << 1),
// valid = 0 only for a skipped paste (empty window or empty warped mask): it has no row and counts in 'skipped'.
extern "C" __global__ void ocp_keep(const OcpSample* __restrict__ samples, const OcpSlot* __restrict__ slots,
                                    long long num_slots, const int* __restrict__ paste_box,
                                    const double* __restrict__ before, const unsigned long long* __restrict__ vis_area,
                                    const int* __restrict__ vis_box, const int* __restrict__ am_box,
                                    const unsigned int* __restrict__ touched, unsigned char* __restrict__ keep,
                                    unsigned char* __restrict__ flags) {
  for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < num_slots;
       j += (long long)gridDim.x * blockDim.x) {
    const OcpSlot L = slots[j];
    const OcpSample S = samples[L.sample];
    int valid = 1, k = 1;
    if (L.kind == OCP_CROWD) {
      k = vis_area[j] > 0;  // a crowd region survives while any pixel is left
    } else if (L.kind == OCP_PASTED && paste_box[4 * L.paste + 2] < 0) {
      valid = 0;
      k = 0;
    } else if (touched[j]) {
      const int* vb = vis_box + 4 * j;
      long long b[4] = {0, 0, 0, 0};  // tight box [x0, y0, x1 + 1, y1 + 1]; zeros when empty
      if (vb[2] >= 0) {
        b[0] = vb[0];
        b[1] = vb[1];
        b[2] = (long long)vb[2] + 1;
        b[3] = (long long)vb[3] + 1;
      }
      const long long bw = b[2] - b[0], bh = b[3] - b[1];
      if (bw <= 0 || bh <= 0) {
        k = 0;
      } else if (S.mode_simple) {
        double bef[4] = {0.0, 0.0, 0.0, 0.0};
        if (L.kind == OCP_EXISTING) {
          for (int c = 0; c < 4; ++c) bef[c] = before[4 * j + c];  // destination box (float32 -> float64)
        } else {
          const int* ab = am_box + 4 * j;  // tight box of the amodal mask
          if (ab[2] >= 0) {
            bef[0] = ab[0];
            bef[1] = ab[1];
            bef[2] = (double)ab[2] + 1.0;
            bef[3] = (double)ab[3] + 1.0;
          }
        }
        const double thr = ocp_bits_to_double(S.bbox_thr_bits);
        bool moved_little = true;
        for (int c = 0; c < 4; ++c) {
          double d = (double)b[c] - bef[c];
          if (d < 0) d = -d;
          if (!(d <= thr)) moved_little = false;
        }
        k = moved_little || (double)vis_area[j] > ocp_bits_to_double(S.mask_thr_bits);
      } else {
        const double thr = ocp_bits_to_double(S.thr_bits);
        k = !((double)bw <= thr || (double)bh <= thr);
      }
    }
    keep[j] = (unsigned char)k;
    flags[j] = (unsigned char)(k | (valid << 1));
  }
}

// Compaction: pos = inclusive prefix sum of keep (int64, cupy.cumsum); kept slot j becomes output row pos[j] - 1.
extern "C" __global__ void ocp_compact(const unsigned char* __restrict__ keep, const long long* __restrict__ pos,
                                       long long num_slots, long long* __restrict__ out_slot) {
  for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < num_slots;
       j += (long long)gridDim.x * blockDim.x) {
    if (keep[j]) out_slot[pos[j] - 1] = j;
  }
}

// Output planes of every kept row. Grid: y strides over output rows (num_inst instance rows, then crowd rows),
// x over the sample's pixels; every output pixel of a requested plane is written.
//   visible  = vis0 && !(cover & allowed)
//   amodal   = input amodal (existing) / the paste's warped mask (pasted)          (only when want & OCP_WANT_AMODAL)
//   occluder = input occluder (existing; a null occ_in reads as zeros) || (inside the amodal box && (cover & later))
//                                                                                 (only when want & OCP_WANT_OCCLUDER)
//   crowd    = input crowd && no paste covers the pixel
// Unrequested planes are neither computed nor written (the host passes a one-element placeholder for them).
extern "C" __global__ void ocp_emit_planes(const OcpSample* __restrict__ samples, const OcpSlot* __restrict__ slots,
                                           const long long* __restrict__ out_slot, long long num_inst,
                                           long long num_rows, const unsigned int* __restrict__ cover,
                                           const unsigned int* __restrict__ allowed,
                                           const unsigned int* __restrict__ later, long long words,
                                           const int* __restrict__ am_box, long long want,
                                           unsigned char* __restrict__ vis_out, unsigned char* __restrict__ am_out,
                                           unsigned char* __restrict__ occ_out, unsigned char* __restrict__ crowd_out) {
  const bool want_am = (want & OCP_WANT_AMODAL) != 0, want_occ = (want & OCP_WANT_OCCLUDER) != 0;
  for (long long r = blockIdx.y; r < num_rows; r += gridDim.y) {
    const long long j = out_slot[r];
    const OcpSlot L = slots[j];
    const OcpSample S = samples[L.sample];
    const long long W = S.width, hw = S.height * S.width;
    const long long stride = (long long)gridDim.x * blockDim.x;
    if (r < num_inst) {
      const long long base = S.plane_base + (r - S.row_base) * hw;
      const unsigned int* aw = allowed + j * words;
      const unsigned int* lw = later + j * words;
      const long long bx0 = am_box[4 * j], by0 = am_box[4 * j + 1];  // inclusive; bx1 = -1 when empty
      const long long bx1 = am_box[4 * j + 2], by1 = am_box[4 * j + 3];
      const unsigned char* occ_in = reinterpret_cast<const unsigned char*>(L.occ_in);
      for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < hw; p += stride) {
        const long long y = p / W, x = p % W;
        bool vis0, am;
        ocp_slot_pixel(L, S, cover, p, vis0, am);
        const bool vis = vis0 && !ocp_cover_any(cover, S, p, aw);
        vis_out[base + p] = vis ? 1 : 0;
        if (want_am) am_out[base + p] = am ? 1 : 0;
        if (want_occ) {
          const bool in_box = x >= bx0 && x <= bx1 && y >= by0 && y <= by1;
          bool occ = L.kind == OCP_EXISTING && occ_in != nullptr && occ_in[p] != 0;
          if (!occ && in_box) occ = ocp_cover_any(cover, S, p, lw);
          occ_out[base + p] = occ ? 1 : 0;
        }
      }
    } else {
      const long long base = S.crowd_plane_base + (r - num_inst - S.crowd_row_base) * hw;
      const unsigned char* cin = reinterpret_cast<const unsigned char*>(L.vis_in);
      for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < hw; p += stride) {
        crowd_out[base + p] = (cin[p] != 0 && !ocp_cover_all_any(cover, S, p)) ? 1 : 0;
      }
    }
  }
}

// Per-row outputs of every kept instance, one thread per output row: boxes (tight box of the visible mask,
// float32), labels, ann_ids, pasted, occlusion rate and keypoints (v = 2 -> 1 when the point's pixel, clamped
// to the image, is covered by a paste made after the instance).
extern "C" __global__ void ocp_emit_rows(const OcpSample* __restrict__ samples, const OcpSlot* __restrict__ slots,
                                         const long long* __restrict__ out_slot, long long num_inst,
                                         const unsigned int* __restrict__ cover,
                                         const unsigned int* __restrict__ later, long long words,
                                         const unsigned long long* __restrict__ vis_area,
                                         const unsigned long long* __restrict__ am_area,
                                         const int* __restrict__ vis_box, const float* __restrict__ kp_in,
                                         float* __restrict__ boxes_out, long long* __restrict__ labels_out,
                                         long long* __restrict__ ann_out, unsigned char* __restrict__ pasted_out,
                                         float* __restrict__ rate_out, float* __restrict__ kp_out) {
  for (long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x; r < num_inst;
       r += (long long)gridDim.x * blockDim.x) {
    const long long j = out_slot[r];
    const OcpSlot L = slots[j];
    const OcpSample S = samples[L.sample];
    const int* vb = vis_box + 4 * j;
    if (vb[2] >= 0) {
      boxes_out[4 * r + 0] = (float)vb[0];
      boxes_out[4 * r + 1] = (float)vb[1];
      boxes_out[4 * r + 2] = (float)((long long)vb[2] + 1);
      boxes_out[4 * r + 3] = (float)((long long)vb[3] + 1);
    } else {
      boxes_out[4 * r + 0] = boxes_out[4 * r + 1] = boxes_out[4 * r + 2] = boxes_out[4 * r + 3] = 0.0f;
    }
    labels_out[r] = L.label;
    ann_out[r] = L.ann_id;
    pasted_out[r] = L.kind == OCP_PASTED ? 1 : 0;
    const unsigned long long va = vis_area[j], aa = am_area[j];
    // (1.0 - vis_area / maximum(amodal_area, 1)) in float64, then float32, as NumPy does
    rate_out[r] = (float)(1.0 - (double)va / (double)(aa > 0 ? aa : 1ull));
    if (S.num_kp > 0) {
      const float* kin = kp_in + L.kp_off;
      float* kout = kp_out + S.kp_out_off + (r - S.row_base) * S.num_kp * 3;
      const unsigned int* lw = later + j * words;
      for (long long k = 0; k < S.num_kp; ++k) {
        const float x = kin[3 * k], y = kin[3 * k + 1];
        float v = kin[3 * k + 2];
        if (v == 2.0f) {
          const long long px = ocp_clamp((long long)floorf(x), 0, S.width - 1);
          const long long py = ocp_clamp((long long)floorf(y), 0, S.height - 1);
          if (ocp_cover_any(cover, S, py * S.width + px, lw)) v = 1.0f;
        }
        kout[3 * k] = x;
        kout[3 * k + 1] = y;
        kout[3 * k + 2] = v;
      }
    }
  }
}

// Occlusion order of every sample's kept rows. Grid: y strides over samples, x over the (num_out, num_out)
// entries. order[a, b]: pasted a -> b created before a and their amodal masks overlap; existing a -> the input
// order between existing rows, False towards pasted rows.
extern "C" __global__ void ocp_emit_order(const OcpSample* __restrict__ samples, long long num_samples,
                                          const OcpSlot* __restrict__ slots, const long long* __restrict__ out_slot,
                                          const unsigned char* __restrict__ overlap,
                                          unsigned char* __restrict__ order_out) {
  for (long long si = blockIdx.y; si < num_samples; si += gridDim.y) {
    const OcpSample S = samples[si];
    const long long n = S.num_out;
    const unsigned char* order_in = reinterpret_cast<const unsigned char*>(S.order_in);
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < n * n;
         idx += (long long)gridDim.x * blockDim.x) {
      const long long a = idx / n, b = idx % n;
      const OcpSlot& La = slots[out_slot[S.row_base + a]];
      const OcpSlot& Lb = slots[out_slot[S.row_base + b]];
      unsigned char v = 0;
      if (La.kind == OCP_PASTED) {
        if (Lb.time < La.time) {
          const long long jb = out_slot[S.row_base + b] - S.slot_begin;
          v = overlap[S.overlap_off + La.time * S.num_slots + jb];
        }
      } else if (Lb.kind == OCP_EXISTING && order_in != nullptr) {
        v = order_in[La.local * S.num_existing + Lb.local] != 0 ? 1 : 0;
      }
      order_out[S.order_out_off + idx] = v;
    }
  }
}
