// TensorRT-free logic of the SelectiveScan plugin: attribute parsing, the input-presence rule, shape checks
// and the kernel parameter block. It lives apart from the TensorRT classes so that it compiles and is tested
// on machines without TensorRT (tests/test_trt_plugin_build.py builds a small program from it with g++).
//
// Input rule. The ONNX node lists its inputs in the order u, delta, A, B, C, D, z, delta_bias, but for the
// plugin path only the PRESENT inputs are listed, packed, in that order: TensorRT's ONNX parser turns an empty
// input name into a null tensor, and TensorRT does not accept null plugin inputs. Which optional inputs are
// present is said by the int attributes has_D, has_z, has_delta_bias (0 or 1):
//   * if any of them is given, the missing ones count as 0, and the number of inputs must be
//     5 + has_D + has_z + has_delta_bias;
//   * if none is given, the inputs are a prefix of the full list: 5 = none, 6 = D, 7 = D and z, 8 = all.
// Shapes: u, delta, z (b, d, l); A (d, n); B, C (b, n, l) or grouped (b, g, n, l) with d % g == 0;
// D, delta_bias (d,). The output has u's shape and type.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "partool_kernels.h"

namespace partool
{
namespace scanplugin
{

constexpr char const* kPluginName = "SelectiveScan";
constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "partool";

//! The kernels' largest state size; larger ones are refused when the engine is built, not at enqueue.
constexpr int64_t kMaxDstate = PARTOOL_MAX_DSTATE;

//! Position of each logical input in the full ONNX input list.
enum Slot : int32_t
{
    kU = 0,
    kDelta = 1,
    kA = 2,
    kB = 3,
    kC = 4,
    kD = 5,
    kZ = 6,
    kDeltaBias = 7,
    kNumSlots = 8
};
constexpr int32_t kNumRequired = 5;

inline char const* slotName(int32_t slot)
{
    static char const* const kNames[kNumSlots] = {"u", "delta", "A", "B", "C", "D", "z", "delta_bias"};
    return (slot >= 0 && slot < kNumSlots) ? kNames[slot] : "?";
}

//! Attribute values; -1 in a has_* field means "not given".
struct Attributes
{
    int32_t deltaSoftplus{0};
    int32_t reverse{0};
    int32_t hasD{-1};
    int32_t hasZ{-1};
    int32_t hasDeltaBias{-1};
};

//! The kinds of field data the parser understands (a TensorRT-free mirror of PluginFieldType).
enum class FieldKind
{
    kInt32,
    kInt64,
    kChar,
    kOther
};

namespace detail
{
inline bool readFlag(FieldKind kind, void const* data, int32_t length, int32_t* value)
{
    if (data == nullptr || length != 1)
    {
        return false;
    }
    int64_t v = 0;
    if (kind == FieldKind::kInt32)
    {
        int32_t tmp = 0;
        std::memcpy(&tmp, data, sizeof(tmp));
        v = tmp;
    }
    else if (kind == FieldKind::kInt64)
    {
        std::memcpy(&v, data, sizeof(v));
    }
    else
    {
        return false;
    }
    if (v != 0 && v != 1)
    {
        return false;
    }
    *value = static_cast<int32_t>(v);
    return true;
}

inline std::string readString(void const* data, int32_t length)
{
    if (data == nullptr || length <= 0)
    {
        return std::string{};
    }
    char const* chars = static_cast<char const*>(data);
    size_t n = 0;
    while (n < static_cast<size_t>(length) && chars[n] != '\0')
    {
        ++n;
    }
    return std::string(chars, n);
}
} // namespace detail

//! Apply one plugin field. Returns an empty string on success, else what is wrong with the field.
inline std::string applyField(
    Attributes& attrs, char const* name, FieldKind kind, void const* data, int32_t length)
{
    if (name == nullptr)
    {
        return "plugin field without a name";
    }
    std::string const field{name};
    int32_t* target = nullptr;
    if (field == "delta_softplus")
    {
        target = &attrs.deltaSoftplus;
    }
    else if (field == "reverse")
    {
        target = &attrs.reverse;
    }
    else if (field == "has_D")
    {
        target = &attrs.hasD;
    }
    else if (field == "has_z")
    {
        target = &attrs.hasZ;
    }
    else if (field == "has_delta_bias")
    {
        target = &attrs.hasDeltaBias;
    }
    if (target != nullptr)
    {
        if (!detail::readFlag(kind, data, length, target))
        {
            return "field '" + field + "' must be one int32 (or int64) equal to 0 or 1";
        }
        return std::string{};
    }
    // The ONNX node carries these to select the plugin; accept them when they name this plugin.
    if (field == "plugin_namespace" || field == "plugin_version")
    {
        char const* expected = field == "plugin_namespace" ? kPluginNamespace : kPluginVersion;
        std::string const value = detail::readString(data, length);
        if (kind != FieldKind::kChar || value != expected)
        {
            return "field '" + field + "' is '" + value + "', this plugin is '" + expected + "'";
        }
        return std::string{};
    }
    return "unknown field '" + field
        + "' (known: delta_softplus, reverse, has_D, has_z, has_delta_bias, plugin_namespace, plugin_version)";
}

//! Where each slot sits among the node's inputs (-1 when absent).
struct InputLayout
{
    int32_t position[kNumSlots]{0, 1, 2, 3, 4, -1, -1, -1};
    int32_t slotAt[kNumSlots]{0, 1, 2, 3, 4, -1, -1, -1};
    int32_t nbInputs{0};

    bool has(int32_t slot) const
    {
        return position[slot] >= 0;
    }
};

//! Apply the input rule above. Returns false and sets *err when nbInputs does not fit the attributes.
inline bool resolveLayout(Attributes const& attrs, int32_t nbInputs, InputLayout* layout, std::string* err)
{
    bool present[3] = {false, false, false};
    bool const anyGiven = attrs.hasD >= 0 || attrs.hasZ >= 0 || attrs.hasDeltaBias >= 0;
    if (anyGiven)
    {
        present[0] = attrs.hasD == 1;
        present[1] = attrs.hasZ == 1;
        present[2] = attrs.hasDeltaBias == 1;
        int32_t const expected = kNumRequired + present[0] + present[1] + present[2];
        if (nbInputs != expected)
        {
            *err = "the node has " + std::to_string(nbInputs) + " inputs but has_D/has_z/has_delta_bias say "
                + std::to_string(expected) + " (u, delta, A, B, C and the present optional inputs, packed)";
            return false;
        }
    }
    else
    {
        if (nbInputs < kNumRequired || nbInputs > kNumSlots)
        {
            *err = "the node has " + std::to_string(nbInputs)
                + " inputs; expected 5 to 8 (u, delta, A, B, C[, D[, z[, delta_bias]]])";
            return false;
        }
        for (int32_t i = 0; i < nbInputs - kNumRequired; ++i)
        {
            present[i] = true;
        }
    }
    InputLayout out;
    out.nbInputs = nbInputs;
    int32_t next = kNumRequired;
    for (int32_t i = 0; i < 3; ++i)
    {
        int32_t const slot = kD + i;
        out.position[slot] = present[i] ? next : -1;
        if (present[i])
        {
            out.slotAt[next] = slot;
            ++next;
        }
    }
    *layout = out;
    return true;
}

//! Problem sizes; -1 where a dimension is not known yet (build time wildcards).
struct ScanShape
{
    int64_t batch{-1};
    int64_t dim{-1};
    int64_t dstate{-1};
    int64_t length{-1};
    int64_t groups{-1};
};

namespace detail
{
inline bool sameDim(int64_t a, int64_t b)
{
    return a < 0 || b < 0 || a == b;
}

inline std::string dimsText(int32_t nbDims, int64_t const* d)
{
    std::string s = "(";
    for (int32_t i = 0; i < nbDims; ++i)
    {
        s += (i ? ", " : "") + std::to_string(d[i]);
    }
    return s + ")";
}

inline int64_t known(int64_t a, int64_t b)
{
    return a >= 0 ? a : b;
}
} // namespace detail

//! Check the input shapes against each other and return the problem sizes.
//! DimsT is nvinfer1::Dims or anything with `int32_t nbDims` and `int64_t d[]`; -1 entries are wildcards.
template <typename DimsT>
bool inferShape(InputLayout const& layout, DimsT const* inputs, ScanShape* shape, std::string* err)
{
    auto const& u = inputs[layout.position[kU]];
    auto const& delta = inputs[layout.position[kDelta]];
    auto const& a = inputs[layout.position[kA]];
    auto const& b = inputs[layout.position[kB]];
    auto const& c = inputs[layout.position[kC]];
    auto fail = [&](int32_t slot, DimsT const& got, std::string const& want) {
        *err = std::string{"input "} + slotName(slot) + " has shape " + detail::dimsText(got.nbDims, got.d)
            + ", expected " + want;
        return false;
    };
    if (u.nbDims != 3)
    {
        return fail(kU, u, "(batch, dim, length)");
    }
    ScanShape s;
    s.batch = u.d[0];
    s.dim = u.d[1];
    s.length = u.d[2];
    auto sameAsU = [&](DimsT const& t) {
        return t.nbDims == 3 && detail::sameDim(t.d[0], s.batch) && detail::sameDim(t.d[1], s.dim)
            && detail::sameDim(t.d[2], s.length);
    };
    if (!sameAsU(delta))
    {
        return fail(kDelta, delta, "u's shape " + detail::dimsText(u.nbDims, u.d));
    }
    if (a.nbDims != 2 || !detail::sameDim(a.d[0], s.dim))
    {
        return fail(kA, a, "(dim, dstate) with dim = " + std::to_string(s.dim));
    }
    s.dstate = a.d[1];
    if (b.nbDims == 3)
    {
        s.groups = 1;
    }
    else if (b.nbDims == 4)
    {
        s.groups = b.d[1];
    }
    else
    {
        return fail(kB, b, "(batch, dstate, length) or (batch, groups, dstate, length)");
    }
    int32_t const off = b.nbDims - 3;
    if (!detail::sameDim(b.d[0], s.batch) || !detail::sameDim(b.d[off + 1], s.dstate)
        || !detail::sameDim(b.d[off + 2], s.length))
    {
        return fail(kB, b, "batch, dstate and length matching u and A");
    }
    s.dstate = detail::known(s.dstate, b.d[off + 1]);
    if (c.nbDims != b.nbDims)
    {
        return fail(kC, c, "the same rank as B");
    }
    for (int32_t i = 0; i < c.nbDims; ++i)
    {
        if (!detail::sameDim(c.d[i], b.d[i]))
        {
            return fail(kC, c, "B's shape " + detail::dimsText(b.nbDims, b.d));
        }
    }
    if (s.groups == 0 || (s.groups > 0 && s.dim >= 0 && s.dim % s.groups != 0))
    {
        return fail(kB, b, "a group count that divides dim = " + std::to_string(s.dim));
    }
    if (s.dstate == 0 || s.dstate > kMaxDstate)
    {
        return fail(kA, a, "dstate between 1 and " + std::to_string(kMaxDstate));
    }
    for (int32_t slot : {static_cast<int32_t>(kD), static_cast<int32_t>(kDeltaBias)})
    {
        if (layout.has(slot))
        {
            auto const& t = inputs[layout.position[slot]];
            if (t.nbDims != 1 || !detail::sameDim(t.d[0], s.dim))
            {
                return fail(slot, t, "(dim,) with dim = " + std::to_string(s.dim));
            }
        }
    }
    if (layout.has(kZ) && !sameAsU(inputs[layout.position[kZ]]))
    {
        return fail(kZ, inputs[layout.position[kZ]], "u's shape " + detail::dimsText(u.nbDims, u.d));
    }
    for (int64_t v : {s.batch, s.dim, s.dstate, s.length, s.groups})
    {
        if (v > std::numeric_limits<int>::max())
        {
            *err = "a dimension of " + std::to_string(v) + " is too large for the kernel (int)";
            return false;
        }
    }
    *shape = s;
    return true;
}

//! The kernel parameter block for one call. Pointers of absent inputs (and all of them when inputs is NULL, as
//! for the workspace query) stay NULL; last_state is not asked for.
inline partool_scan_params_t makeParams(ScanShape const& s, Attributes const& attrs, InputLayout const& layout,
    partool_dtype_t ioDtype, void const* const* inputs, void* out)
{
    auto ptr = [&](int32_t slot) -> void const* {
        return (inputs != nullptr && layout.has(slot)) ? inputs[layout.position[slot]] : nullptr;
    };
    partool_scan_params_t p;
    std::memset(&p, 0, sizeof(p));
    p.batch = static_cast<int>(s.batch);
    p.dim = static_cast<int>(s.dim);
    p.dstate = static_cast<int>(s.dstate);
    p.length = static_cast<int>(s.length);
    p.groups = static_cast<int>(s.groups);
    p.io_dtype = ioDtype;
    p.u = ptr(kU);
    p.delta = ptr(kDelta);
    p.A = static_cast<float const*>(ptr(kA));
    p.B = ptr(kB);
    p.C = ptr(kC);
    p.D = static_cast<float const*>(ptr(kD));
    p.z = ptr(kZ);
    p.delta_bias = static_cast<float const*>(ptr(kDeltaBias));
    p.out = out;
    p.last_state = nullptr;
    p.delta_softplus = attrs.deltaSoftplus;
    p.reverse = attrs.reverse;
    return p;
}

// Tactics. TensorRT times every tactic a plugin advertises when it builds an engine, keeps the fastest per
// layer and shape profile, and calls setTactic with it before enqueue at run time. The tactics here are the
// kernel library's explicit CUDA scan variants (partool_scan_cuda_variant_t: each chunked tile, each state
// split of the row kernel), so the engine runs the scan kernel that is fastest on the GPU it was built on;
// tactic 0, TensorRT's default, is the library's own heuristic (PARTOOL_SCAN_CUDA_AUTO).
constexpr int32_t kTactics[] = {PARTOOL_SCAN_CUDA_CHUNKED_TILE4, PARTOOL_SCAN_CUDA_CHUNKED_TILE8,
    PARTOOL_SCAN_CUDA_CHUNKED_TILE32, PARTOOL_SCAN_CUDA_ROWS_STATES1, PARTOOL_SCAN_CUDA_ROWS_STATES2,
    PARTOOL_SCAN_CUDA_ROWS_STATES4, PARTOOL_SCAN_CUDA_ROWS_STATES8, PARTOOL_SCAN_CUDA_ROWS_STATES16};
constexpr int32_t kNumTactics = static_cast<int32_t>(sizeof(kTactics) / sizeof(kTactics[0]));

//! True for 0 (the default) and for each advertised tactic.
inline bool validTactic(int32_t tactic)
{
    if (tactic == 0)
    {
        return true;
    }
    for (int32_t t : kTactics)
    {
        if (t == tactic)
        {
            return true;
        }
    }
    return false;
}

//! The timing-cache key suffix: what, besides the shapes and formats TensorRT adds itself, decides a tactic's
//! speed. The scan's attributes change the work per element; the ABI version changes the kernels.
inline std::string timingCacheId(Attributes const& attrs)
{
    return std::string{kPluginNamespace} + "::" + kPluginName + "/v" + kPluginVersion + "/abi"
        + std::to_string(PARTOOL_KERNELS_ABI_VERSION) + "/softplus" + std::to_string(attrs.deltaSoftplus)
        + "/reverse" + std::to_string(attrs.reverse) + "/D" + std::to_string(attrs.hasD) + "/z"
        + std::to_string(attrs.hasZ) + "/bias" + std::to_string(attrs.hasDeltaBias);
}

} // namespace scanplugin
} // namespace partool
