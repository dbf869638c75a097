// A reusable 64-byte-aligned float scratch of csrc/cpu: grows when asked for more, never shrinks
// (the same few sizes come back every training step), freed with its owner.
#pragma once
#include <cstdlib>
#include <new>

namespace pygan_cpu {

struct AlignedBuffer {
  float* p = nullptr;
  size_t n = 0;
  // At least size floats; throws std::bad_alloc (MemoryError in Python) when that fails, so call
  // it outside OpenMP regions, where an exception would terminate the process.
  float* get(size_t size) {
    if (size > n) {
      float* fresh = static_cast<float*>(std::aligned_alloc(64, ((size * sizeof(float) + 63) / 64) * 64));
      if (!fresh) throw std::bad_alloc();
      std::free(p);
      p = fresh;
      n = size;
    }
    return p;
  }
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { std::free(p); }
};

}  // namespace pygan_cpu
