// The sample geometry (LSJ / keep-ratio resize / flip / pad, ocp_dali.lsj) of a whole batch: three launches.
//
//   ocp_lsj_scan   every input mask plane of the batch (instances: visible, and amodal / occluder when requested;
//                  crowd regions: visible) -> the tight box of its resampled plane, without writing it: a set input
//                  pixel (x, y) lands on the canvas columns / rows whose clamped nearest sample is x / y (a span,
//                  geometry.cuh's ocp_clamped_index_span), so the output box is the hull of those spans. An empty
//                  box (x1 = -1) is an instance that loses every pixel (lsj's keep flags) or an empty plane.
//   ocp_lsj_image  every output canvas: integer bilinear (ocp_bilinear_pixel) inside the content window
//                  [0, valid_w) x [0, valid_h), zero padding.
//   ocp_lsj_masks  every kept plane (rows of the table the host builds from the boxes), each requested kind:
//                  nearest with clamped indices inside the plane's output box, zeros elsewhere; written straight
//                  into the batch buffers (one per kind) at the row's offset.
//
// The map is axis-aligned (every LSJ map is; the host checks b = d = 0): input u = a X + c, v = e Y + f (Q16) for
// the output pixel (X, Y). The same per-pixel functions as the compiled CPU loops (kernels/geometry_cpu.cpp) and
// the arithmetic of the NumPy oracle (lsj.sample_affine_arrays), so every backend gives the same bits.
// Descriptor structs: all fields int64 (mirrors kernels/lsj.py LSJ_SAMPLE_FIELDS, LSJ_PLANE_FIELDS,
// LSJ_ROW_FIELDS; tests/test_gpu_lsj.py checks the order).
#include "ocp_common.cuh"

#define OCP_LSJ_KINDS 3  // visible, amodal, occluder: boxes[(plane * 3 + kind) * 4 ...]

// One sample's geometry (mirrors lsj.LSJ_SAMPLE_FIELDS).
struct OcpLsjSample {
  long long height, width;              // input image
  long long img_in, img_row;            // device pointer to the (height, width, 3) uint8 input; row bytes
  long long out_h, out_w;               // output canvas
  long long valid_w, valid_h;           // content window on the canvas (the rest is padding)
  long long inv_a, inv_c, inv_e, inv_f; // LSJParams.inv_q16 (a, c, e, f; b = d = 0)
  long long img_out_off;                // element offset of its output canvas in the batch image buffer
};

// One input mask plane: an instance (its kinds) or a crowd region (visible only) (mirrors lsj.LSJ_PLANE_FIELDS).
struct OcpLsjPlane {
  long long sample;
  long long vis_in, amodal_in, occ_in;  // device pointers to (height, width) bool planes; 0: not resampled
};

// One output plane of kept inputs (mirrors lsj.LSJ_ROW_FIELDS): element offsets into the batch buffers of each
// kind, -1 where the kind is not written (crowd rows: vis_off into the crowd buffer).
struct OcpLsjRow {
  long long plane, crowd, vis_off, amodal_off, occ_off;
};

__device__ __forceinline__ const unsigned char* ocp_lsj_kind_in(const OcpLsjPlane& P, int k) {
  const long long p = k == 0 ? P.vis_in : (k == 1 ? P.amodal_in : P.occ_in);
  return reinterpret_cast<const unsigned char*>(p);
}

// Grid: y strides over planes, x over the input pixels of the plane. boxes: (num_planes, 3, 4) int32, initialised
// by the host to (BIG, BIG, -1, -1): inclusive (min X, min Y, max X, max Y) of each resampled kind on the canvas.
extern "C" __global__ void ocp_lsj_scan(const OcpLsjSample* __restrict__ samples,
                                        const OcpLsjPlane* __restrict__ planes, long long num_planes,
                                        int* __restrict__ boxes) {
  __shared__ long long sbuf[OCP_BLOCK];
  for (long long j = blockIdx.y; j < num_planes; j += gridDim.y) {
    const OcpLsjPlane P = planes[j];
    const OcpLsjSample S = samples[P.sample];
    const long long n = S.height * S.width;
    long long b[OCP_LSJ_KINDS][4];
    for (int k = 0; k < OCP_LSJ_KINDS; ++k) {
      b[k][0] = OCP_INT_BIG;
      b[k][1] = OCP_INT_BIG;
      b[k][2] = -1;
      b[k][3] = -1;
    }
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
      bool set[OCP_LSJ_KINDS], any = false;
      for (int k = 0; k < OCP_LSJ_KINDS; ++k) {
        const unsigned char* m = ocp_lsj_kind_in(P, k);
        set[k] = m != nullptr && m[i] != 0;
        any = any || set[k];
      }
      if (!any) continue;
      const long long x = i % S.width, y = i / S.width;
      long long sx0, sx1, sy0, sy1;  // the canvas columns / rows that sample input column x / row y
      ocp_clamped_index_span(S.inv_a, S.inv_c, x, x + 1, S.width, S.valid_w, &sx0, &sx1);
      ocp_clamped_index_span(S.inv_e, S.inv_f, y, y + 1, S.height, S.valid_h, &sy0, &sy1);
      if (sx0 == sx1 || sy0 == sy1) continue;  // not sampled (downscaling) or off the canvas (crop)
      for (int k = 0; k < OCP_LSJ_KINDS; ++k) {
        if (!set[k]) continue;
        b[k][0] = ocp_min(b[k][0], sx0);
        b[k][1] = ocp_min(b[k][1], sy0);
        b[k][2] = ocp_max(b[k][2], sx1 - 1);
        b[k][3] = ocp_max(b[k][3], sy1 - 1);
      }
    }
    for (int k = 0; k < OCP_LSJ_KINDS; ++k) {  // block-uniform: every thread merges every kind
      ocp_block_box_merge(b[k][0], b[k][1], b[k][2], b[k][3], boxes + (j * OCP_LSJ_KINDS + k) * 4, sbuf);
    }
  }
}

// Grid: y strides over samples, x over the pixels of the sample's canvas. Every byte of each canvas is written.
extern "C" __global__ void ocp_lsj_image(const OcpLsjSample* __restrict__ samples, long long num_samples,
                                         unsigned char* __restrict__ img_out) {
  for (long long s = blockIdx.y; s < num_samples; s += gridDim.y) {
    const OcpLsjSample S = samples[s];
    const long long n = S.out_h * S.out_w;
    const unsigned char* img = reinterpret_cast<const unsigned char*>(S.img_in);
    unsigned char* out = img_out + S.img_out_off;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < n;
         p += (long long)gridDim.x * blockDim.x) {
      const long long X = p % S.out_w, Y = p / S.out_w;
      unsigned char* o = out + p * 3;
      if (X < S.valid_w && Y < S.valid_h) {
        ocp_bilinear_pixel(img, S.img_row, S.height, S.width, S.inv_a * X + S.inv_c, S.inv_e * Y + S.inv_f, o);
      } else {
        o[0] = 0;
        o[1] = 0;
        o[2] = 0;
      }
    }
  }
}

// Grid: y strides over output rows, x over the pixels of the row's canvas. Every byte of each written plane is
// written: the nearest sample inside the kind's output box (from ocp_lsj_scan), zero outside it.
extern "C" __global__ void ocp_lsj_masks(const OcpLsjSample* __restrict__ samples,
                                         const OcpLsjPlane* __restrict__ planes, const OcpLsjRow* __restrict__ rows,
                                         long long num_rows, const int* __restrict__ boxes,
                                         unsigned char* __restrict__ vis_out, unsigned char* __restrict__ am_out,
                                         unsigned char* __restrict__ occ_out, unsigned char* __restrict__ crowd_out) {
  for (long long r = blockIdx.y; r < num_rows; r += gridDim.y) {
    const OcpLsjRow R = rows[r];
    const OcpLsjPlane P = planes[R.plane];
    const OcpLsjSample S = samples[P.sample];
    const long long n = S.out_h * S.out_w;
    const long long offs[OCP_LSJ_KINDS] = {R.vis_off, R.amodal_off, R.occ_off};
    unsigned char* outs[OCP_LSJ_KINDS] = {R.crowd ? crowd_out : vis_out, am_out, occ_out};
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < n;
         p += (long long)gridDim.x * blockDim.x) {
      const long long X = p % S.out_w, Y = p / S.out_w;
      for (int k = 0; k < OCP_LSJ_KINDS; ++k) {
        if (offs[k] < 0) continue;
        const int* b = boxes + (R.plane * OCP_LSJ_KINDS + k) * 4;
        unsigned char v = 0;
        if (X >= b[0] && X <= b[2] && Y >= b[1] && Y <= b[3]) {
          const long long iu = ocp_nearest_clamped(S.inv_a * X + S.inv_c, S.width);
          const long long iv = ocp_nearest_clamped(S.inv_e * Y + S.inv_f, S.height);
          v = ocp_lsj_kind_in(P, k)[iv * S.width + iu] != 0 ? 1 : 0;
        }
        outs[k][offs[k] + p] = v;
      }
    }
  }
}
