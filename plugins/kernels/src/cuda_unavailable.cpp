// The CUDA entry points of a CPU-only build (no nvcc at build time): they validate like the real
// ones, so argument errors read the same everywhere, then report PARTOOL_ERR_NO_CUDA.
#include "common.hpp"

extern "C" {

int partool_kernels_has_cuda(void) { return 0; }

size_t partool_selective_scan_workspace_size(const partool_scan_params_t*) { return 0; }

int partool_selective_scan_fwd_cuda_variant(const partool_scan_params_t* p, int variant, void*) {
  static const char* where = "partool_selective_scan_fwd_cuda_variant";
  if (int s = partool::validate_scan(p, where)) return s;
  if (int s = partool::validate_scan_variant(variant, where)) return s;
  return partool::fail(PARTOOL_ERR_NO_CUDA, "%s: library built without CUDA", where);
}

int partool_selective_scan_fwd_cuda(const partool_scan_params_t* p, void*) {
  if (int s = partool::validate_scan(p, "partool_selective_scan_fwd_cuda")) return s;
  return partool::fail(PARTOOL_ERR_NO_CUDA, "partool_selective_scan_fwd_cuda: library built without CUDA");
}

int partool_selective_scan_bidir_fwd_cuda_variant(const partool_bidir_scan_params_t* p, int variant, void*) {
  static const char* where = "partool_selective_scan_bidir_fwd_cuda_variant";
  if (int s = partool::validate_bidir(p, where)) return s;
  if (int s = partool::validate_scan_variant(variant, where)) return s;
  return partool::fail(PARTOOL_ERR_NO_CUDA, "%s: library built without CUDA", where);
}

int partool_selective_scan_bidir_fwd_cuda(const partool_bidir_scan_params_t* p, void*) {
  if (int s = partool::validate_bidir(p, "partool_selective_scan_bidir_fwd_cuda")) return s;
  return partool::fail(PARTOOL_ERR_NO_CUDA, "partool_selective_scan_bidir_fwd_cuda: library built without CUDA");
}

int partool_causal_conv1d_fwd_cuda(const partool_conv1d_params_t* p, void*) {
  if (int s = partool::validate_conv(p, "partool_causal_conv1d_fwd_cuda")) return s;
  return partool::fail(PARTOOL_ERR_NO_CUDA, "partool_causal_conv1d_fwd_cuda: library built without CUDA");
}

int partool_causal_conv1d_pair_fwd_cuda(const partool_conv1d_pair_params_t* p, void*) {
  if (int s = partool::validate_conv_pair(p, "partool_causal_conv1d_pair_fwd_cuda")) return s;
  return partool::fail(PARTOOL_ERR_NO_CUDA, "partool_causal_conv1d_pair_fwd_cuda: library built without CUDA");
}

int partool_add_rms_norm_fwd_cuda(const partool_add_rms_norm_params_t* p, void*) {
  if (int s = partool::validate_add_rms_norm(p, "partool_add_rms_norm_fwd_cuda")) return s;
  return partool::fail(PARTOOL_ERR_NO_CUDA, "partool_add_rms_norm_fwd_cuda: library built without CUDA");
}

int partool_selective_scan_bwd_cuda(const partool_scan_bwd_params_t* p, void*) {
  if (int s = partool::validate_scan_bwd(p, "partool_selective_scan_bwd_cuda")) return s;
  return partool::fail(PARTOOL_ERR_NO_CUDA, "partool_selective_scan_bwd_cuda: library built without CUDA");
}

int partool_causal_conv1d_bwd_cuda(const partool_conv1d_bwd_params_t* p, void*) {
  if (int s = partool::validate_conv_bwd(p, "partool_causal_conv1d_bwd_cuda")) return s;
  return partool::fail(PARTOOL_ERR_NO_CUDA, "partool_causal_conv1d_bwd_cuda: library built without CUDA");
}

}  // extern "C"
