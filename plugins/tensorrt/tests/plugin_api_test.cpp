// Drives the built libpartool_trt_plugins.so through TensorRT's plugin interfaces the way TensorRT's builder and
// runtime do, without TensorRT itself (only its headers): getCreators, createPlugin from ONNX-style fields,
// output types/shapes, format combinations, tactics, configure, serialize and re-create, runtime shape checks;
// with libpartool_kernels_cudaemu preloaded, enqueue under every tactic against a reference scan.
// Usage: [LD_PRELOAD=libpartool_kernels_cudaemu.so] plugin_api_test /path/to/libpartool_trt_plugins.so
// Exits with the number of failed checks.
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "NvInferRuntime.h"

using namespace nvinfer1;

namespace
{
int gFailures = 0;

void check(bool ok, char const* what, int line)
{
    if (!ok)
    {
        std::printf("FAIL line %d: %s\n", line, what);
        ++gFailures;
    }
}
#define CHECK(cond) check((cond), #cond, __LINE__)

// The plugin only copies expressions; these stand-ins are never dereferenced through their pImpl.
struct FakeExpr : IDimensionExpr
{
    FakeExpr()
    {
        mImpl = nullptr;
    }
};
struct FakeBuilder : IExprBuilder
{
    FakeBuilder()
    {
        mImpl = nullptr;
    }
};

Dims makeDims(std::initializer_list<int64_t> v)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(v.size());
    int32_t i = 0;
    for (int64_t x : v)
    {
        d.d[i++] = x;
    }
    return d;
}

DynamicPluginTensorDesc dyn(Dims dims, DataType type)
{
    DynamicPluginTensorDesc t{};
    t.desc.dims = dims;
    t.desc.type = type;
    t.desc.format = TensorFormat::kLINEAR;
    t.min = dims;
    t.opt = dims;
    t.max = dims;
    return t;
}

// Deterministic values in [lo, hi).
std::vector<float> values(size_t n, float lo, float hi, uint32_t seed)
{
    std::vector<float> v(n);
    for (auto& x : v)
    {
        seed = seed * 1664525u + 1013904223u;
        x = lo + (hi - lo) * static_cast<float>(seed >> 8) / 16777216.0f;
    }
    return v;
}

// The scan of the plugin's node in double precision: softplus(delta + delta_bias), D, no z, reverse, B and C
// grouped (b, g, n, l); written from the formulas in partool_kernels.h.
std::vector<double> referenceScan(std::vector<float> const& u, std::vector<float> const& delta,
    std::vector<float> const& A, std::vector<float> const& B, std::vector<float> const& C, std::vector<float> const& D,
    std::vector<float> const& bias, int b, int d, int n, int l, int g)
{
    std::vector<double> y(u.size());
    for (int bi = 0; bi < b; ++bi)
    {
        for (int c = 0; c < d; ++c)
        {
            int const gi = c / (d / g);
            std::vector<double> h(static_cast<size_t>(n), 0.0);
            for (int t = l - 1; t >= 0; --t)
            {
                size_t const at = (static_cast<size_t>(bi) * d + c) * l + t;
                double const x = static_cast<double>(delta[at]) + bias[c];
                double const dt = x > 20.0 ? x : std::log1p(std::exp(x));
                double acc = 0.0;
                for (int k = 0; k < n; ++k)
                {
                    size_t const bc = ((static_cast<size_t>(bi) * g + gi) * n + k) * l + t;
                    h[k] = std::exp(dt * A[c * n + k]) * h[k] + dt * B[bc] * u[at];
                    acc += C[bc] * h[k];
                }
                y[at] = acc + static_cast<double>(D[c]) * u[at];
            }
        }
    }
    return y;
}

// `v` rounded to T in place (so that the reference sees what the kernel reads), and its copy in T.
template <typename T>
std::vector<T> roundTo(std::vector<float>& v)
{
    std::vector<T> out(v.size());
    for (size_t i = 0; i < v.size(); ++i)
    {
        out[i] = static_cast<T>(v[i]);
        v[i] = static_cast<float>(out[i]);
    }
    return out;
}

// With libpartool_kernels_cudaemu preloaded (LD_PRELOAD: it defines the same partool_* entry points and runs the
// CUDA kernels on the CPU, on host pointers), enqueue computes for real: with u, delta, B, C and the output in
// T (`type`), under each tactic the output matches the double-precision reference within `tolerance` (relative
// to its largest value), and each tactic launches a kernel configuration of its own.
template <typename T>
void checkEnqueueOnEmulator(
    IPluginV3OneRuntime* rt, std::vector<int32_t> const& tactics, DataType type, double tolerance, char const* name)
{
    using LastLaunch = unsigned long long (*)(unsigned*, unsigned*, size_t*);
    auto lastLaunch = reinterpret_cast<LastLaunch>(dlsym(RTLD_DEFAULT, "partool_cudaemu_last_launch"));
    if (lastLaunch == nullptr)
    {
        std::printf("enqueue on the emulated kernels: skipped (libpartool_kernels_cudaemu not preloaded)\n");
        return;
    }
    int const b = 2, d = 8, n = 4, l = 37, g = 2;
    auto u = values(static_cast<size_t>(b * d * l), -1.0f, 1.0f, 1);
    auto delta = values(u.size(), -3.0f, 1.0f, 2);
    auto A = values(static_cast<size_t>(d * n), -2.0f, -0.1f, 3);
    auto B = values(static_cast<size_t>(b * g * n * l), -1.0f, 1.0f, 4);
    auto C = values(B.size(), -1.0f, 1.0f, 5);
    auto D = values(static_cast<size_t>(d), -1.0f, 1.0f, 6);
    auto bias = values(static_cast<size_t>(d), -1.0f, 0.5f, 7);
    std::vector<T> const uT = roundTo<T>(u), deltaT = roundTo<T>(delta), BT = roundTo<T>(B), CT = roundTo<T>(C);
    std::vector<double> const want = referenceScan(u, delta, A, B, C, D, bias, b, d, n, l, g);
    double scale = 0.0;
    for (double v : want)
    {
        scale = std::max(scale, std::fabs(v));
    }
    int32_t const nbIn = 7; // u, delta, A, B, C, D, delta_bias (the plugin's has_* fields)
    PluginTensorDesc desc[nbIn + 1]{};
    Dims const dims[nbIn + 1] = {makeDims({b, d, l}), makeDims({b, d, l}), makeDims({d, n}), makeDims({b, g, n, l}),
        makeDims({b, g, n, l}), makeDims({d}), makeDims({d}), makeDims({b, d, l})};
    for (int32_t i = 0; i <= nbIn; ++i)
    {
        desc[i].dims = dims[i];
        desc[i].type = (i == 2 || i == 5 || i == 6) ? DataType::kFLOAT : type; // A, D, delta_bias stay float32
        desc[i].format = TensorFormat::kLINEAR;
    }
    CHECK(rt->onShapeChange(desc, nbIn, &desc[nbIn], 1) == 0);
    void const* inputs[nbIn] = {uT.data(), deltaT.data(), A.data(), BT.data(), CT.data(), D.data(), bias.data()};
    std::set<size_t> configurations;
    double worst = 0.0;
    for (int32_t tactic : tactics)
    {
        std::vector<T> out(u.size(), static_cast<T>(std::nanf("")));
        void* outputs[1] = {out.data()};
        CHECK(rt->setTactic(tactic) == 0);
        unsigned long long const before = lastLaunch(nullptr, nullptr, nullptr);
        CHECK(rt->enqueue(desc, &desc[nbIn], inputs, outputs, nullptr, nullptr) == 0);
        size_t smem = 0;
        unsigned threads = 0;
        CHECK(lastLaunch(nullptr, &threads, &smem) == before + 1 && threads == 128);
        configurations.insert(smem);
        double err = 0.0;
        for (size_t i = 0; i < out.size(); ++i)
        {
            float const got = static_cast<float>(out[i]);
            err = std::max(err, std::isnan(got) ? 1e9 : std::fabs(got - want[i]));
        }
        if (!(err <= tolerance * scale))
        {
            std::printf("%s, tactic %d: max |enqueue - reference| = %g (max |reference| %g)\n", name, tactic, err,
                scale);
        }
        CHECK(err <= tolerance * scale);
        worst = std::max(worst, err / scale);
    }
    CHECK(configurations.size() == tactics.size());
    std::printf("enqueue on the emulated kernels: %s, %zu tactics, worst relative error %.1e\n", name,
        tactics.size(), worst);
}

std::map<std::string, int32_t> intFields(PluginFieldCollection const* fc)
{
    std::map<std::string, int32_t> out;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    {
        if (fc->fields[i].type == PluginFieldType::kINT32 && fc->fields[i].length == 1)
        {
            out[fc->fields[i].name] = *static_cast<int32_t const*>(fc->fields[i].data);
        }
    }
    return out;
}
} // namespace

int main(int argc, char** argv)
{
    if (argc != 2)
    {
        std::printf("usage: %s LIBRARY\n", argv[0]);
        return 100;
    }
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr)
    {
        std::printf("dlopen failed: %s\n", dlerror());
        return 100;
    }
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    CHECK(dlsym(lib, "setLoggerFinder") != nullptr);
    if (getCreators == nullptr)
    {
        std::printf("no getCreators\n");
        return 100;
    }
    int32_t nb = 0;
    IPluginCreatorInterface* const* creators = getCreators(nb);
    CHECK(nb == 1);
    CHECK(std::strcmp(creators[0]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
    auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
    CHECK(std::strcmp(creator->getPluginName(), "SelectiveScan") == 0);
    CHECK(std::strcmp(creator->getPluginVersion(), "1") == 0);
    CHECK(std::strcmp(creator->getPluginNamespace(), "partool") == 0);
    auto names = creator->getFieldNames();
    CHECK(names != nullptr && names->nbFields == 5);

    // As TensorRT's ONNX parser passes them: ints as kINT32, strings as kCHAR without NUL. D and delta_bias only.
    int32_t const one = 1;
    int32_t const zero = 0;
    std::vector<PluginField> fields = {{"delta_softplus", &one, PluginFieldType::kINT32, 1},
        {"reverse", &one, PluginFieldType::kINT32, 1}, {"has_D", &one, PluginFieldType::kINT32, 1},
        {"has_z", &zero, PluginFieldType::kINT32, 1}, {"has_delta_bias", &one, PluginFieldType::kINT32, 1},
        {"plugin_namespace", "partool", PluginFieldType::kCHAR, 7}};
    PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};
    IPluginV3* plugin = creator->createPlugin("scan0", &fc, TensorRTPhase::kBUILD);
    CHECK(plugin != nullptr);
    if (plugin == nullptr)
    {
        return gFailures;
    }
    std::vector<PluginField> badFields = {{"reverse", &one, PluginFieldType::kFLOAT32, 1}};
    PluginFieldCollection badFc{1, badFields.data()};
    CHECK(creator->createPlugin("bad", &badFc, TensorRTPhase::kBUILD) == nullptr);

    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* rt = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    CHECK(std::strcmp(core->getPluginName(), "SelectiveScan") == 0);
    CHECK(std::strcmp(core->getPluginNamespace(), "partool") == 0);
    CHECK(std::strcmp(build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0);
    CHECK(std::strcmp(rt->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0);
    CHECK(build->getNbOutputs() == 1);

    // Inputs: u, delta, A, B, C, D, delta_bias (7); b = 2, d = 8, n = 4, l = 5, B/C grouped with g = 2.
    int32_t const nbIn = 7;
    DataType types[nbIn] = {DataType::kHALF, DataType::kHALF, DataType::kFLOAT, DataType::kHALF, DataType::kHALF,
        DataType::kFLOAT, DataType::kFLOAT};
    DataType outType = DataType::kFLOAT;
    CHECK(build->getOutputDataTypes(&outType, 1, types, nbIn) == 0 && outType == DataType::kHALF);
    DataType bf16[nbIn] = {DataType::kBF16};
    CHECK(build->getOutputDataTypes(&outType, 1, bf16, nbIn) != 0);

    FakeExpr e[4];
    DimsExprs in[nbIn]{};
    in[0].nbDims = 3;
    in[0].d[0] = &e[0];
    in[0].d[1] = &e[1];
    in[0].d[2] = &e[2];
    DimsExprs out[1]{};
    FakeBuilder builder;
    CHECK(build->getOutputShapes(in, nbIn, nullptr, 0, out, 1, builder) == 0);
    CHECK(out[0].nbDims == 3 && out[0].d[0] == &e[0] && out[0].d[1] == &e[1] && out[0].d[2] == &e[2]);
    CHECK(build->getOutputShapes(in, 6, nullptr, 0, out, 1, builder) != 0); // has_* say 7 inputs

    Dims const u = makeDims({-1, 8, -1});
    Dims const bc = makeDims({-1, 2, 4, -1});
    DynamicPluginTensorDesc io[nbIn + 1] = {dyn(u, DataType::kHALF), dyn(u, DataType::kHALF),
        dyn(makeDims({8, 4}), DataType::kFLOAT), dyn(bc, DataType::kHALF), dyn(bc, DataType::kHALF),
        dyn(makeDims({8}), DataType::kFLOAT), dyn(makeDims({8}), DataType::kFLOAT), dyn(u, DataType::kHALF)};
    for (int32_t pos = 0; pos <= nbIn; ++pos)
    {
        CHECK(build->supportsFormatCombination(pos, io, nbIn, 1));
    }
    io[2].desc.type = DataType::kHALF; // A must be float32
    CHECK(!build->supportsFormatCombination(2, io, nbIn, 1));
    io[2].desc.type = DataType::kFLOAT;
    io[6].desc.type = DataType::kHALF; // delta_bias must be float32
    CHECK(!build->supportsFormatCombination(6, io, nbIn, 1));
    io[6].desc.type = DataType::kFLOAT;
    io[7].desc.type = DataType::kFLOAT; // output must match u
    CHECK(!build->supportsFormatCombination(7, io, nbIn, 1));
    io[7].desc.type = DataType::kHALF;
    io[3].desc.format = TensorFormat::kHWC8;
    CHECK(!build->supportsFormatCombination(3, io, nbIn, 1));
    io[3].desc.format = TensorFormat::kLINEAR;
    CHECK(build->configurePlugin(io, nbIn, &io[nbIn], 1) == 0);
    io[1].desc.dims = makeDims({-1, 6, -1});
    CHECK(build->configurePlugin(io, nbIn, &io[nbIn], 1) != 0);
    io[1].desc.dims = u;

    // Tactics: the kernel library's explicit CUDA scan variants (unique, non-zero, each named by the library),
    // which TensorRT times at build; setTactic takes them and the default 0, and refuses anything else.
    int32_t const nbTactics = build->getNbTactics();
    CHECK(nbTactics == 8);
    std::vector<int32_t> tactics(static_cast<size_t>(nbTactics), 0);
    CHECK(build->getValidTactics(tactics.data(), nbTactics) == 0);
    CHECK(std::set<int32_t>(tactics.begin(), tactics.end()).size() == tactics.size());
    using VariantName = char const* (*) (int);
    auto variantName = reinterpret_cast<VariantName>(dlsym(lib, "partool_scan_cuda_variant_name"));
    CHECK(variantName != nullptr);
    for (int32_t t : tactics)
    {
        char const* name = variantName != nullptr ? variantName(t) : nullptr;
        CHECK(t != 0 && name != nullptr && std::strchr(name, '/') != nullptr); // "chunked/tile8", "rows/states16"
        CHECK(rt->setTactic(t) == 0);
    }
    CHECK(build->getValidTactics(tactics.data(), nbTactics - 1) != 0);
    CHECK(rt->setTactic(0) == 0);
    CHECK(rt->setTactic(99) != 0);
    char const* cacheId = build->getTimingCacheID();
    CHECK(cacheId != nullptr && std::strstr(cacheId, "SelectiveScan") != nullptr
        && std::strstr(cacheId, "softplus1/reverse1/D1/z0/bias1") != nullptr);

    // Serialize and re-create as the runtime does.
    auto serialized = intFields(rt->getFieldsToSerialize());
    CHECK(serialized.size() == 5);
    CHECK(serialized["delta_softplus"] == 1 && serialized["reverse"] == 1);
    CHECK(serialized["has_D"] == 1 && serialized["has_z"] == 0 && serialized["has_delta_bias"] == 1);
    IPluginV3* runtimePlugin = creator->createPlugin("scan0", rt->getFieldsToSerialize(), TensorRTPhase::kRUNTIME);
    CHECK(runtimePlugin != nullptr);
    if (runtimePlugin != nullptr)
    {
        auto* rt2 = static_cast<IPluginV3OneRuntime*>(
            runtimePlugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        IPluginV3* attached = rt2->attachToContext(nullptr);
        CHECK(attached != nullptr);
        auto* rt3 = static_cast<IPluginV3OneRuntime*>(attached->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        PluginTensorDesc concrete[nbIn + 1];
        for (int32_t i = 0; i <= nbIn; ++i)
        {
            concrete[i] = io[i].desc;
        }
        Dims const u0 = makeDims({0, 8, 5});
        Dims const bc0 = makeDims({0, 2, 4, 5});
        concrete[0].dims = concrete[1].dims = concrete[7].dims = u0;
        concrete[3].dims = concrete[4].dims = bc0;
        CHECK(rt3->onShapeChange(concrete, nbIn, &concrete[nbIn], 1) == 0);
        void const* ptrs[nbIn] = {};
        void* outs[1] = {nullptr};
        // An empty batch needs no kernel call; a shape that disagrees is refused before the kernel.
        CHECK(rt3->enqueue(concrete, &concrete[nbIn], ptrs, outs, nullptr, nullptr) == 0);
        concrete[4].dims = makeDims({0, 2, 4, 6});
        CHECK(rt3->enqueue(concrete, &concrete[nbIn], ptrs, outs, nullptr, nullptr) != 0);
        CHECK(rt3->onShapeChange(concrete, nbIn, &concrete[nbIn], 1) != 0);
        checkEnqueueOnEmulator<float>(rt3, tactics, DataType::kFLOAT, 1e-5, "float32");
        checkEnqueueOnEmulator<_Float16>(rt3, tactics, DataType::kHALF, 2e-3, "float16");
        delete attached;
        delete runtimePlugin;
    }
    IPluginV3* copy = plugin->clone();
    CHECK(copy != nullptr && intFields(static_cast<IPluginV3OneRuntime*>(
                                 copy->getCapabilityInterface(PluginCapabilityType::kRUNTIME))
                                           ->getFieldsToSerialize())
            == serialized);
    delete copy;
    delete plugin;
    std::printf("%d failure(s)\n", gFailures);
    return gFailures;
}
