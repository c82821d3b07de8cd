// ONNX Runtime custom-op library for partool::SelectiveScan: runs the exported plugin graph on ONNX Runtime's
// CPU execution provider by calling libpartool_kernels' CPU scan on ORT's own buffers (no copies, no Python).
//
// Only the C API (onnxruntime_c_api.h) is used, and libonnxruntime is not linked: every ORT function comes
// through the OrtApi table that ORT hands to RegisterCustomOps, so one build serves every ORT release whose
// API version is at least kMinApiVersion (the C API is ABI-stable; newer runtimes serve older versions).
//
// The node contract (attributes, the packed optional inputs, shapes) is parsed by scan_plugin_logic.h, the
// same TensorRT-free code the TensorRT plugin uses, so both runtimes accept and refuse the same graphs.
//
// Two OrtCustomOp entries share the name: float and float16 io (u, delta, B, C, z, out); A, D and delta_bias
// are float in both. ORT merges them into one schema and picks the kernel by input type. The optional slots
// 5..7 are declared "any type" because, packed, a slot may hold z (io type) or D/delta_bias (float); the
// kernel checks their real types.
//
// The work is split into (batch, channel block) items run on ORT's intra-op thread pool
// (KernelContext_ParallelFor), so the session's thread setting holds and no extra threads compete with
// ORT's spinning workers. Each item is one single-threaded kernel call on a block of channels that share one
// B/C group.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "onnxruntime_c_api.h"
#include "partool_kernels.h"
#include "scan_plugin_logic.h"

namespace {

namespace sp = partool::scanplugin;

// Oldest ORT C API this library runs on: CreateKernelV2/KernelComputeV2 (16), KernelContext_ParallelFor and
// the shape-inference context (17).
constexpr uint32_t kMinApiVersion = 17;
static_assert(ORT_API_VERSION >= kMinApiVersion, "onnxruntime_c_api.h is older than ONNX Runtime 1.17");
// Channels per work item: enough work per kernel call (each call re-lays out its B/C group, l x n floats)
// and enough items to balance two to sixteen threads at Vim/VMamba widths.
constexpr int64_t kChannelsPerItem = 64;
constexpr size_t kMaxRank = 8;

const OrtApi* g_api = nullptr;  // set once by RegisterCustomOps, before any op callback can run

OrtStatus* make_status(OrtErrorCode code, const std::string& message) {
  return g_api->CreateStatus(code, ("partool SelectiveScan: " + message).c_str());
}

// Shape of one tensor as scan_plugin_logic.h's inferShape wants it.
struct Dims {
  int32_t nbDims = 0;
  int64_t d[kMaxRank] = {};
};

struct TensorView {
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  Dims dims;
  const void* data = nullptr;
};

// Releases an OrtStatus / OrtTensorTypeAndShapeInfo on scope exit.
struct StatusGuard {
  OrtStatus* s;
  ~StatusGuard() {
    if (s != nullptr) g_api->ReleaseStatus(s);
  }
};
struct InfoGuard {
  OrtTensorTypeAndShapeInfo* p = nullptr;
  ~InfoGuard() {
    if (p != nullptr) g_api->ReleaseTensorTypeAndShapeInfo(p);
  }
};

#define PARTOOL_RETURN_IF_ERROR(expr)     \
  do {                                    \
    if (OrtStatus* _s = (expr)) return _s; \
  } while (0)

OrtStatus* read_tensor(const OrtValue* value, TensorView* out) {
  InfoGuard info;
  PARTOOL_RETURN_IF_ERROR(g_api->GetTensorTypeAndShape(value, &info.p));
  PARTOOL_RETURN_IF_ERROR(g_api->GetTensorElementType(info.p, &out->type));
  size_t rank = 0;
  PARTOOL_RETURN_IF_ERROR(g_api->GetDimensionsCount(info.p, &rank));
  if (rank > kMaxRank) {
    return make_status(ORT_INVALID_ARGUMENT,
                       "an input has rank " + std::to_string(rank) + "; SelectiveScan inputs have rank 1 to 4");
  }
  out->dims.nbDims = static_cast<int32_t>(rank);
  PARTOOL_RETURN_IF_ERROR(g_api->GetDimensions(info.p, out->dims.d, rank));
  void* data = nullptr;
  // The C API has no const accessor before version 1.23; the kernel only reads inputs.
  PARTOOL_RETURN_IF_ERROR(g_api->GetTensorMutableData(const_cast<OrtValue*>(value), &data));
  out->data = data;
  return nullptr;
}

const char* type_name(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
      return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
      return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
      return "bfloat16";
    default:
      return "a non-float type";
  }
}

// One kernel instance per graph node: the parsed attributes and where each input sits.
struct ScanKernel {
  std::string node;  // for messages
  sp::Attributes attrs;
  sp::InputLayout layout;
  ONNXTensorElementDataType io_type;
};

// The per-call job shared by the ParallelFor items.
struct ScanJob {
  partool_scan_params_t whole;  // the full problem; items narrow it to (1 batch, a block of channels, 1 group)
  int64_t channels_per_group = 0;
  int64_t items_per_group = 0;
  int64_t channels_per_item = 0;
  size_t io_size = 0;
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::string error;
};

void run_item(void* user, size_t item) {
  auto* job = static_cast<ScanJob*>(user);
  if (job->failed.load(std::memory_order_relaxed)) return;
  const partool_scan_params_t& w = job->whole;
  const int64_t per_batch = static_cast<int64_t>(w.groups) * job->items_per_group;
  const int64_t b = static_cast<int64_t>(item) / per_batch;
  const int64_t group = (static_cast<int64_t>(item) % per_batch) / job->items_per_group;
  const int64_t block = static_cast<int64_t>(item) % job->items_per_group;
  const int64_t c0 = group * job->channels_per_group + block * job->channels_per_item;
  const int64_t c1 = std::min(c0 + job->channels_per_item, (group + 1) * job->channels_per_group);
  if (c0 >= c1) return;

  const int64_t L = w.length, N = w.dstate;
  const size_t row = static_cast<size_t>(((b * w.dim) + c0) * L) * job->io_size;  // byte offset of (b, c0, 0)
  const size_t bc = static_cast<size_t>(((b * w.groups) + group) * N * L) * job->io_size;
  auto at = [](const void* base, size_t bytes) -> const void* {
    return base == nullptr ? nullptr : static_cast<const char*>(base) + bytes;
  };
  partool_scan_params_t p = w;
  p.batch = 1;
  p.dim = static_cast<int>(c1 - c0);
  p.groups = 1;
  p.u = at(w.u, row);
  p.delta = at(w.delta, row);
  p.z = at(w.z, row);
  p.out = static_cast<char*>(w.out) + row;
  p.B = at(w.B, bc);
  p.C = at(w.C, bc);
  p.A = w.A + c0 * N;
  p.D = w.D == nullptr ? nullptr : w.D + c0;
  p.delta_bias = w.delta_bias == nullptr ? nullptr : w.delta_bias + c0;
  p.last_state = nullptr;
  if (partool_selective_scan_fwd_cpu(&p, 1) != PARTOOL_OK) {
    const std::string message = partool_last_error_message();  // thread-local: read it on this thread
    std::lock_guard<std::mutex> lock(job->error_mutex);
    if (!job->failed.exchange(true)) job->error = message;
  }
}

OrtStatus* compute(const ScanKernel& k, OrtKernelContext* ctx) {
  size_t count = 0;
  PARTOOL_RETURN_IF_ERROR(g_api->KernelContext_GetInputCount(ctx, &count));
  if (count != static_cast<size_t>(k.layout.nbInputs)) {
    return make_status(ORT_INVALID_ARGUMENT, "node '" + k.node + "' got " + std::to_string(count) +
                                                 " inputs at run time, expected " +
                                                 std::to_string(k.layout.nbInputs));
  }
  TensorView views[sp::kNumSlots];
  Dims dims[sp::kNumSlots];
  const void* data[sp::kNumSlots] = {};
  for (size_t i = 0; i < count; ++i) {
    const OrtValue* value = nullptr;
    PARTOOL_RETURN_IF_ERROR(g_api->KernelContext_GetInput(ctx, i, &value));
    if (value == nullptr) {
      return make_status(ORT_INVALID_ARGUMENT, "node '" + k.node + "': input " +
                                                   sp::slotName(k.layout.slotAt[i]) + " is missing");
    }
    PARTOOL_RETURN_IF_ERROR(read_tensor(value, &views[i]));
    dims[i] = views[i].dims;
    data[i] = views[i].data;
  }
  // ORT checked u, delta, B, C (io type) and A (float); the packed optional slots accept any type.
  for (int32_t slot : {int32_t{sp::kD}, int32_t{sp::kZ}, int32_t{sp::kDeltaBias}}) {
    if (!k.layout.has(slot)) continue;
    const auto want = slot == sp::kZ ? k.io_type : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    const auto got = views[k.layout.position[slot]].type;
    if (got != want) {
      return make_status(ORT_INVALID_ARGUMENT, "node '" + k.node + "': input " + sp::slotName(slot) + " is " +
                                                   type_name(got) + ", expected " + type_name(want) +
                                                   (slot == sp::kZ ? " (the type of u)" : ""));
    }
  }
  sp::ScanShape shape;
  std::string err;
  if (!sp::inferShape(k.layout, dims, &shape, &err)) {
    return make_status(ORT_INVALID_ARGUMENT, "node '" + k.node + "': " + err);
  }
  const Dims& u = dims[k.layout.position[sp::kU]];
  OrtValue* out_value = nullptr;
  PARTOOL_RETURN_IF_ERROR(g_api->KernelContext_GetOutput(ctx, 0, u.d, static_cast<size_t>(u.nbDims), &out_value));
  void* out = nullptr;
  PARTOOL_RETURN_IF_ERROR(g_api->GetTensorMutableData(out_value, &out));
  if (shape.batch == 0 || shape.dim == 0 || shape.length == 0) return nullptr;  // empty output, nothing to scan

  const bool f16 = k.io_type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
  ScanJob job;
  job.whole = sp::makeParams(shape, k.attrs, k.layout, f16 ? PARTOOL_DTYPE_F16 : PARTOOL_DTYPE_F32, data, out);
  job.io_size = f16 ? 2 : 4;
  job.channels_per_group = shape.dim / shape.groups;
  job.items_per_group = std::max<int64_t>(1, job.channels_per_group / kChannelsPerItem);
  job.channels_per_item = (job.channels_per_group + job.items_per_group - 1) / job.items_per_group;
  const size_t items = static_cast<size_t>(shape.batch * shape.groups * job.items_per_group);
  PARTOOL_RETURN_IF_ERROR(g_api->KernelContext_ParallelFor(ctx, run_item, items, 0, &job));
  if (job.failed.load()) {
    return make_status(ORT_RUNTIME_EXCEPTION, "node '" + k.node + "': " + job.error);
  }
  return nullptr;
}

// ---- attributes -------------------------------------------------------------------------------------------

// Applies one attribute to k->attrs when the node has it; absent attributes keep their defaults.
OrtStatus* apply_attribute(const OrtKernelInfo* info, const char* name, bool is_string, ScanKernel* k) {
  std::string value;
  int64_t number = 0;
  if (is_string) {
    size_t size = 0;
    StatusGuard probe{g_api->KernelInfoGetAttribute_string(info, name, nullptr, &size)};
    if (probe.s != nullptr) return nullptr;  // not given
    value.assign(size, '\0');
    PARTOOL_RETURN_IF_ERROR(g_api->KernelInfoGetAttribute_string(info, name, value.data(), &size));
    value.resize(size > 0 ? size - 1 : 0);  // size counts the terminating NUL
  } else {
    StatusGuard got{g_api->KernelInfoGetAttribute_int64(info, name, &number)};
    if (got.s != nullptr) return nullptr;  // not given as an int: the input rule treats it as absent
  }
  const std::string problem =
      is_string ? sp::applyField(k->attrs, name, sp::FieldKind::kChar, value.data(),
                                 static_cast<int32_t>(value.size()))
                : sp::applyField(k->attrs, name, sp::FieldKind::kInt64, &number, 1);
  if (!problem.empty()) return make_status(ORT_INVALID_ARGUMENT, "node '" + k->node + "': " + problem);
  return nullptr;
}

std::string node_name(const OrtKernelInfo* info) {
  size_t size = 0;
  StatusGuard probe{g_api->KernelInfo_GetNodeName(info, nullptr, &size)};
  if (probe.s != nullptr || size == 0) return "?";
  std::string name(size, '\0');
  StatusGuard got{g_api->KernelInfo_GetNodeName(info, name.data(), &size)};
  if (got.s != nullptr) return "?";
  name.resize(size > 0 ? size - 1 : 0);
  return name;
}

// ---- OrtCustomOp callbacks ----------------------------------------------------------------------------------

struct ScanOp {
  OrtCustomOp op;  // first member: ORT passes &op back to every callback
  ONNXTensorElementDataType io_type;
};

ONNXTensorElementDataType io_type_of(const OrtCustomOp* op) {
  return reinterpret_cast<const ScanOp*>(op)->io_type;
}

OrtStatus* ORT_API_CALL create_kernel(const OrtCustomOp* op, const OrtApi*, const OrtKernelInfo* info,
                                      void** kernel) noexcept {
  try {
    auto k = std::make_unique<ScanKernel>();
    k->node = node_name(info);
    k->io_type = io_type_of(op);
    for (const char* name : {"delta_softplus", "reverse", "has_D", "has_z", "has_delta_bias"}) {
      PARTOOL_RETURN_IF_ERROR(apply_attribute(info, name, false, k.get()));
    }
    for (const char* name : {"plugin_namespace", "plugin_version"}) {
      PARTOOL_RETURN_IF_ERROR(apply_attribute(info, name, true, k.get()));
    }
    size_t inputs = 0;
    PARTOOL_RETURN_IF_ERROR(g_api->KernelInfo_GetInputCount(info, &inputs));
    std::string err;
    if (!sp::resolveLayout(k->attrs, static_cast<int32_t>(inputs), &k->layout, &err)) {
      return make_status(ORT_INVALID_GRAPH, "node '" + k->node + "': " + err);
    }
    *kernel = k.release();
    return nullptr;
  } catch (const std::exception& e) {
    return make_status(ORT_FAIL, std::string{"creating the kernel failed: "} + e.what());
  }
}

OrtStatus* ORT_API_CALL compute_kernel(void* kernel, OrtKernelContext* ctx) noexcept {
  try {
    return compute(*static_cast<const ScanKernel*>(kernel), ctx);
  } catch (const std::bad_alloc&) {
    return make_status(ORT_FAIL, "out of memory");
  } catch (const std::exception& e) {
    return make_status(ORT_FAIL, e.what());
  }
}

void ORT_API_CALL destroy_kernel(void* kernel) noexcept { delete static_cast<ScanKernel*>(kernel); }

const char* ORT_API_CALL op_name(const OrtCustomOp*) noexcept { return sp::kPluginName; }

const char* ORT_API_CALL op_provider(const OrtCustomOp*) noexcept { return "CPUExecutionProvider"; }

size_t ORT_API_CALL input_count(const OrtCustomOp*) noexcept { return sp::kNumSlots; }

ONNXTensorElementDataType ORT_API_CALL input_type(const OrtCustomOp* op, size_t index) noexcept {
  if (index == sp::kA) return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  if (index >= sp::kNumRequired) return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;  // packed: z or D/delta_bias
  return io_type_of(op);
}

OrtCustomOpInputOutputCharacteristic ORT_API_CALL input_characteristic(const OrtCustomOp*, size_t index) noexcept {
  return index < sp::kNumRequired ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
}

size_t ORT_API_CALL output_count(const OrtCustomOp*) noexcept { return 1; }

ONNXTensorElementDataType ORT_API_CALL output_type(const OrtCustomOp* op, size_t) noexcept { return io_type_of(op); }

OrtCustomOpInputOutputCharacteristic ORT_API_CALL output_characteristic(const OrtCustomOp*, size_t) noexcept {
  return INPUT_OUTPUT_REQUIRED;
}

OrtMemType ORT_API_CALL input_memory_type(const OrtCustomOp*, size_t) noexcept { return OrtMemTypeDefault; }

int ORT_API_CALL variadic_min_arity(const OrtCustomOp*) noexcept { return 1; }

int ORT_API_CALL variadic_homogeneity(const OrtCustomOp*) noexcept { return 1; }

// The output has u's type and shape (symbolic dimensions included), so ORT plans the memory of what follows.
OrtStatus* ORT_API_CALL infer_output_shape(const OrtCustomOp*, OrtShapeInferContext* ctx) noexcept {
  OrtTensorTypeAndShapeInfo* u = nullptr;  // owned by the context: not released here
  PARTOOL_RETURN_IF_ERROR(g_api->ShapeInferContext_GetInputTypeShape(ctx, sp::kU, &u));
  return g_api->ShapeInferContext_SetOutputTypeShape(ctx, 0, u);
}

ScanOp make_op(ONNXTensorElementDataType io_type, uint32_t version) {
  ScanOp s{};  // every callback this library does not implement stays NULL
  OrtCustomOp& op = s.op;
  op.version = version;
  op.GetName = op_name;
  op.GetExecutionProviderType = op_provider;
  op.GetInputType = input_type;
  op.GetInputTypeCount = input_count;
  op.GetOutputType = output_type;
  op.GetOutputTypeCount = output_count;
  op.KernelDestroy = destroy_kernel;
  op.GetInputCharacteristic = input_characteristic;
  op.GetOutputCharacteristic = output_characteristic;
  op.GetInputMemoryType = input_memory_type;
  op.GetVariadicInputMinArity = variadic_min_arity;
  op.GetVariadicInputHomogeneity = variadic_homogeneity;
  op.GetVariadicOutputMinArity = variadic_min_arity;
  op.GetVariadicOutputHomogeneity = variadic_homogeneity;
  op.CreateKernelV2 = create_kernel;
  op.KernelComputeV2 = compute_kernel;
  op.InferOutputShapeFn = infer_output_shape;
  s.io_type = io_type;
  return s;
}

// The ops and the domain live for the whole process: ORT keeps pointers to them in every session that used
// them, and at exit ORT may be finalised before this library, so they are never released.
ScanOp g_ops[2];
OrtCustomOpDomain* g_domain = nullptr;
std::mutex g_register_mutex;

OrtStatus* create_domain(uint32_t version) {
  g_ops[0] = make_op(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, version);
  g_ops[1] = make_op(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, version);
  OrtCustomOpDomain* domain = nullptr;
  PARTOOL_RETURN_IF_ERROR(g_api->CreateCustomOpDomain(sp::kPluginNamespace, &domain));
  for (ScanOp& op : g_ops) {
    if (OrtStatus* s = g_api->CustomOpDomain_Add(domain, &op.op)) {
      g_api->ReleaseCustomOpDomain(domain);
      return s;
    }
  }
  g_domain = domain;
  return nullptr;
}

}  // namespace

extern "C" {

// The entry point ORT looks up in a custom-op library (SessionOptions.register_custom_ops_library,
// OrtApi::RegisterCustomOpsLibrary_V2): adds the "partool" domain with SelectiveScan to `options`.
__attribute__((visibility("default"))) OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                              const OrtApiBase* base) {
  std::lock_guard<std::mutex> lock(g_register_mutex);
  if (g_domain == nullptr) {
    // The newest API both sides know: this header's, or the runtime's when the runtime is older.
    uint32_t version = ORT_API_VERSION;
    const OrtApi* api = base->GetApi(version);
    while (api == nullptr && version > kMinApiVersion) api = base->GetApi(--version);
    if (api == nullptr) {
      // Version 1 always exists, and CreateStatus is its first entry: enough to say what is wrong.
      const std::string message = std::string{"partool SelectiveScan: ONNX Runtime "} + base->GetVersionString() +
                                  " is too old for this custom-op library (needs 1." +
                                  std::to_string(kMinApiVersion) + " or newer)";
      return base->GetApi(1)->CreateStatus(ORT_FAIL, message.c_str());
    }
    g_api = api;
    if (partool_kernels_abi_version() != PARTOOL_KERNELS_ABI_VERSION) {
      return make_status(ORT_FAIL, "libpartool_kernels has ABI " + std::to_string(partool_kernels_abi_version()) +
                                       ", this library was built for " +
                                       std::to_string(PARTOOL_KERNELS_ABI_VERSION) + "; rebuild both");
    }
    PARTOOL_RETURN_IF_ERROR(create_domain(version));
  }
  return g_api->AddCustomOpDomain(options, g_domain);
}

}  // extern "C"
