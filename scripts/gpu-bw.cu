// gpu-bw: the GPU memory-bandwidth baseline for scripts/gpu-check.sh, the
// GPU counterpart of `chatglm bench --mem-bw`. Token generation reads every
// weight once per token, so the relevant ceiling is a read-only stream:
//
//   read   a kernel reads a buffer much larger than L2 with 16-byte loads
//          and folds it into one word per thread (so nothing is elided);
//   copy   cudaMemcpy device to device, counting bytes read plus written.
//
// Each figure is the best of several timed passes (CUDA events) after a
// warm-up, in GB/s (10^9 bytes). Build and run:
//   nvcc -O3 -arch=native -o gpu-bw scripts/gpu-bw.cu && ./gpu-bw [GiB]
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(call)                                                        \
	do {                                                                   \
		cudaError_t err_ = (call);                                         \
		if (err_ != cudaSuccess) {                                         \
			fprintf(stderr, "gpu-bw: %s: %s\n", #call, cudaGetErrorString(err_)); \
			exit(1);                                                       \
		}                                                                  \
	} while (0)

__global__ void read_kernel(const uint4 *src, size_t n, unsigned *sink) {
	unsigned acc = 0;
	size_t stride = (size_t)gridDim.x * blockDim.x;
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
		uint4 v = src[i];
		acc ^= v.x ^ v.y ^ v.z ^ v.w;
	}
	// Written only in a case that never happens, but the compiler can't know.
	if (acc == 0x9e3779b9u) sink[0] = acc;
}

int main(int argc, char **argv) {
	double gib = argc > 1 ? atof(argv[1]) : 4.0;
	size_t bytes = (size_t)(gib * (1 << 30)) & ~(size_t)15;
	int passes = 20;

	cudaDeviceProp prop;
	CHECK(cudaGetDeviceProperties(&prop, 0));
	void *a, *b;
	unsigned *sink;
	CHECK(cudaMalloc(&a, bytes));
	CHECK(cudaMalloc(&b, bytes));
	CHECK(cudaMalloc(&sink, sizeof(unsigned)));
	CHECK(cudaMemset(a, 1, bytes));
	CHECK(cudaMemset(b, 2, bytes));

	cudaEvent_t start, stop;
	CHECK(cudaEventCreate(&start));
	CHECK(cudaEventCreate(&stop));
	int blocks = prop.multiProcessorCount * 8, threads = 512;
	size_t n = bytes / sizeof(uint4);

	float best_read = 1e30f, best_copy = 1e30f, ms;
	for (int i = -2; i < passes; i++) { // two warm-up passes
		CHECK(cudaEventRecord(start));
		read_kernel<<<blocks, threads>>>((const uint4 *)a, n, sink);
		CHECK(cudaEventRecord(stop));
		CHECK(cudaEventSynchronize(stop));
		CHECK(cudaGetLastError());
		CHECK(cudaEventElapsedTime(&ms, start, stop));
		if (i >= 0 && ms < best_read) best_read = ms;

		CHECK(cudaEventRecord(start));
		CHECK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
		CHECK(cudaEventRecord(stop));
		CHECK(cudaEventSynchronize(stop));
		CHECK(cudaEventElapsedTime(&ms, start, stop));
		if (i >= 0 && ms < best_copy) best_copy = ms;
	}
	double read_gbs = bytes / (best_read * 1e-3) / 1e9;
	double copy_gbs = 2.0 * bytes / (best_copy * 1e-3) / 1e9;
	printf("device: %s, %d SMs, %.1f GiB\n", prop.name, prop.multiProcessorCount,
	       prop.totalGlobalMem / (double)(1 << 30));
	printf("buffer: %.2f GiB, best of %d passes\n", bytes / (double)(1 << 30), passes);
	printf("read_gbs %.1f\n", read_gbs);
	printf("copy_gbs %.1f\n", copy_gbs);
	return 0;
}
