// Host emulation of the small CUDA subset the OC&P kernels use, so their exact integer logic can be run and
// compared with the NumPy reference on machines without a GPU (kernels/emulate.py compiles each .cu with g++
// against this header). Not a CUDA runtime: one OS thread; the threads of a block are cooperative fibers
// (ucontext) that switch only at __syncthreads(), blocks run one after the other.
//
// What it checks that a GPU would also enforce: every thread of a block reaches the same __syncthreads() (a
// divergent barrier aborts the launch with an error). What it cannot check: real concurrency between blocks
// (atomics are trivially atomic here), the memory model, and timing. compute-sanitizer on a GPU covers those.
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static  // blocks run one at a time: a function-static array is the block's shared memory

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  dim3(unsigned int a = 1, unsigned int b = 1, unsigned int c = 1) : x(a), y(b), z(c) {}
};

inline uint3 threadIdx{0, 0, 0};
inline uint3 blockIdx{0, 0, 0};
inline dim3 blockDim;
inline dim3 gridDim;

namespace ocp_emu {

enum State { RUNNABLE = 0, AT_BARRIER = 1, DONE = 2 };

struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  State state = RUNNABLE;
};

inline std::vector<Fiber> fibers;
inline ucontext_t scheduler;
inline unsigned int current = 0;
inline const std::function<void()>* body = nullptr;
inline int error = 0;  // set when a launch failed (divergent barrier)
constexpr size_t kStack = 256 * 1024;

inline void entry(int i) {
  (*body)();
  fibers[i].state = DONE;  // returning resumes the scheduler (uc_link)
}

inline void barrier() {
  Fiber& f = fibers[current];
  f.state = AT_BARRIER;
  swapcontext(&f.ctx, &scheduler);
}

// Runs one block: every fiber runs until its next barrier; when all of them wait there, the next round starts.
inline void run_block(unsigned int nthreads) {
  fibers.resize(nthreads);
  for (unsigned int i = 0; i < nthreads; ++i) {
    Fiber& f = fibers[i];
    f.stack.resize(kStack);
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc_stack.ss_size = f.stack.size();
    f.ctx.uc_link = &scheduler;
    makecontext(&f.ctx, reinterpret_cast<void (*)()>(entry), 1, static_cast<int>(i));
    f.state = RUNNABLE;
  }
  for (;;) {
    unsigned int done = 0, waiting = 0;
    for (unsigned int i = 0; i < nthreads; ++i) {
      Fiber& f = fibers[i];
      if (f.state == DONE) {
        ++done;
        continue;
      }
      current = i;
      threadIdx = uint3{i, 0, 0};
      f.state = RUNNABLE;
      swapcontext(&scheduler, &f.ctx);
      if (f.state == AT_BARRIER) ++waiting;
      else ++done;
    }
    if (done == nthreads) return;
    if (done != 0) {
      // Some threads finished while others wait at a barrier: undefined behaviour on a GPU.
      std::fprintf(stderr, "ocp emulator: __syncthreads() not reached by every thread of block (%u,%u,%u)\n",
                   blockIdx.x, blockIdx.y, blockIdx.z);
      error = 1;
      return;  // the waiting fibers are abandoned (their stacks are reset by the next launch)
    }
  }
}

inline int launch(dim3 grid, dim3 block, const std::function<void()>& fn) {
  error = 0;
  body = &fn;
  gridDim = grid;
  blockDim = block;
  if (block.y != 1 || block.z != 1) {
    std::fprintf(stderr, "ocp emulator: only 1-D blocks are supported\n");
    return 1;
  }
  for (unsigned int z = 0; z < grid.z && !error; ++z)
    for (unsigned int y = 0; y < grid.y && !error; ++y)
      for (unsigned int x = 0; x < grid.x && !error; ++x) {
        blockIdx = uint3{x, y, z};
        run_block(block.x);
      }
  return error;
}

}  // namespace ocp_emu

inline void __syncthreads() { ocp_emu::barrier(); }

inline int __syncthreads_or(int predicate) {
  static int flag = 0;
  ocp_emu::barrier();
  if (predicate) flag = 1;
  ocp_emu::barrier();
  const int r = flag;
  ocp_emu::barrier();
  if (threadIdx.x == 0) flag = 0;  // reset before anyone can pass the next call's first barrier
  return r;
}

// Fibers switch only at barriers, so read-modify-write is atomic with respect to every other emulated thread.
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  const unsigned long long old = *p;
  *p = old + v;
  return old;
}
inline int atomicMin(int* p, int v) {
  const int old = *p;
  if (v < old) *p = v;
  return old;
}
inline int atomicMax(int* p, int v) {
  const int old = *p;
  if (v > old) *p = v;
  return old;
}
inline unsigned int atomicOr(unsigned int* p, unsigned int v) {
  const unsigned int old = *p;
  *p = old | v;
  return old;
}

inline double __longlong_as_double(long long v) {
  double d;
  std::memcpy(&d, &v, sizeof d);
  return d;
}
