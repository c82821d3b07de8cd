// SelectiveScan IPluginV3: adapts scan_plugin_logic.h to TensorRT and calls the kernel library's C ABI.
// Every entry point is noexcept and reports failure by logging and returning nonzero / nullptr / false.
#include "selective_scan_plugin.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <exception>
#include <iterator>
#include <utility>

namespace partool
{
namespace trt
{
namespace
{

using nvinfer1::DataType;
using nvinfer1::ILogger;
using scanplugin::Attributes;
using scanplugin::FieldKind;
using scanplugin::InputLayout;
using scanplugin::ScanShape;

std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};

//! Log through TensorRT's logger when the library was given one, else to stderr (errors only).
void log(ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        std::string const text = std::string{"[partool SelectiveScan] "} + message;
        nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
        ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
        if (logger != nullptr)
        {
            logger->log(severity, text.c_str());
        }
        else if (severity <= ILogger::Severity::kWARNING)
        {
            std::fprintf(stderr, "%s\n", text.c_str());
        }
    }
    catch (...)
    {
        // Logging must never throw across the TensorRT ABI.
    }
}

void logError(std::string const& message) noexcept
{
    log(ILogger::Severity::kERROR, message);
}

FieldKind fieldKind(nvinfer1::PluginFieldType type)
{
    switch (type)
    {
    case nvinfer1::PluginFieldType::kINT32: return FieldKind::kInt32;
    case nvinfer1::PluginFieldType::kINT64: return FieldKind::kInt64;
    case nvinfer1::PluginFieldType::kCHAR: return FieldKind::kChar;
    default: return FieldKind::kOther;
    }
}

bool ioTypeSupported(DataType type)
{
    return type == DataType::kFLOAT || type == DataType::kHALF;
}

partool_dtype_t kernelDtype(DataType type)
{
    return type == DataType::kHALF ? PARTOOL_DTYPE_F16 : PARTOOL_DTYPE_F32;
}

bool isFloat32Slot(int32_t slot)
{
    return slot == scanplugin::kA || slot == scanplugin::kD || slot == scanplugin::kDeltaBias;
}

//! Copy the `dims` member of TensorRT descriptors into a contiguous array for inferShape.
template <typename Desc, typename Get>
std::vector<nvinfer1::Dims> collectDims(Desc const* descs, int32_t n, Get get)
{
    std::vector<nvinfer1::Dims> dims(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i)
    {
        dims[static_cast<size_t>(i)] = get(descs[i]);
    }
    return dims;
}

} // namespace

void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

// ---------------------------------------------------------------------------------------------------------------
// SelectiveScanPlugin

SelectiveScanPlugin::SelectiveScanPlugin(Attributes const& attrs) noexcept
    : mAttrs(attrs)
{
}

nvinfer1::IPluginCapability* SelectiveScanPlugin::getCapabilityInterface(
    nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* SelectiveScanPlugin::clone() noexcept
{
    try
    {
        return new SelectiveScanPlugin(*this);
    }
    catch (std::exception const& e)
    {
        logError(std::string{"clone failed: "} + e.what());
    }
    return nullptr;
}

char const* SelectiveScanPlugin::getPluginName() const noexcept
{
    return scanplugin::kPluginName;
}

char const* SelectiveScanPlugin::getPluginVersion() const noexcept
{
    return scanplugin::kPluginVersion;
}

char const* SelectiveScanPlugin::getPluginNamespace() const noexcept
{
    return scanplugin::kPluginNamespace;
}

bool SelectiveScanPlugin::resolve(int32_t nbInputs) noexcept
{
    try
    {
        InputLayout layout;
        std::string err;
        if (!scanplugin::resolveLayout(mAttrs, nbInputs, &layout, &err))
        {
            logError(err);
            return false;
        }
        mLayout = layout;
        mLayoutResolved = true;
        return true;
    }
    catch (std::exception const& e)
    {
        logError(e.what());
    }
    return false;
}

bool SelectiveScanPlugin::resolveFromAttributes() noexcept
{
    if (mAttrs.hasD < 0 || mAttrs.hasZ < 0 || mAttrs.hasDeltaBias < 0)
    {
        return false;
    }
    return resolve(scanplugin::kNumRequired + mAttrs.hasD + mAttrs.hasZ + mAttrs.hasDeltaBias);
}

int32_t SelectiveScanPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        if (nbOutputs != 1 || !resolve(nbInputs))
        {
            return 1;
        }
        // desc.dims may hold -1 wildcards; check the structure and the known sizes now, the rest in onShapeChange.
        auto dims = collectDims(in, nbInputs, [](nvinfer1::DynamicPluginTensorDesc const& d) { return d.desc.dims; });
        ScanShape shape;
        std::string err;
        if (!scanplugin::inferShape(mLayout, dims.data(), &shape, &err))
        {
            logError(err);
            return 1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(std::string{"configurePlugin: "} + e.what());
    }
    return 1;
}

int32_t SelectiveScanPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbOutputs != 1 || nbInputs < scanplugin::kNumRequired)
    {
        logError("expected 1 output and at least 5 inputs");
        return 1;
    }
    if (!ioTypeSupported(inputTypes[scanplugin::kU]))
    {
        logError("u must be float32 or float16");
        return 1;
    }
    outputTypes[0] = inputTypes[scanplugin::kU];
    return 0;
}

int32_t SelectiveScanPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    if (nbOutputs != 1 || nbShapeInputs != 0)
    {
        logError("expected 1 output and no shape inputs");
        return 1;
    }
    if (!resolve(nbInputs))
    {
        return 1;
    }
    if (inputs[scanplugin::kU].nbDims != 3)
    {
        logError("u must be 3-D (batch, dim, length)");
        return 1;
    }
    // The output is u's shape, symbolically: batch and length stay dynamic.
    outputs[0] = inputs[scanplugin::kU];
    return 0;
}

bool SelectiveScanPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    InputLayout layout;
    std::string err;
    if (nbOutputs != 1 || pos < 0 || pos > nbInputs || !scanplugin::resolveLayout(mAttrs, nbInputs, &layout, &err))
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == scanplugin::kU)
    {
        return ioTypeSupported(desc.type);
    }
    int32_t const slot = pos < nbInputs ? layout.slotAt[pos] : -1; // -1: the output
    if (isFloat32Slot(slot))
    {
        return desc.type == DataType::kFLOAT;
    }
    return desc.type == inOut[scanplugin::kU].desc.type;
}

int32_t SelectiveScanPlugin::getNbOutputs() const noexcept
{
    return 1;
}

size_t SelectiveScanPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    try
    {
        InputLayout layout;
        std::string err;
        if (!scanplugin::resolveLayout(mAttrs, nbInputs, &layout, &err))
        {
            logError(err);
            return 0;
        }
        // Size for the largest shapes of the profile; smaller ones need no more.
        auto dims = collectDims(inputs, nbInputs, [](nvinfer1::DynamicPluginTensorDesc const& d) { return d.max; });
        ScanShape shape;
        if (!scanplugin::inferShape(layout, dims.data(), &shape, &err))
        {
            logError(err);
            return 0;
        }
        partool_scan_params_t const p = scanplugin::makeParams(
            shape, mAttrs, layout, kernelDtype(inputs[scanplugin::kU].desc.type), nullptr, nullptr);
        return partool_selective_scan_workspace_size(&p);
    }
    catch (std::exception const& e)
    {
        logError(std::string{"getWorkspaceSize: "} + e.what());
    }
    return 0;
}

int32_t SelectiveScanPlugin::getNbTactics() noexcept
{
    return scanplugin::kNumTactics;
}

int32_t SelectiveScanPlugin::getValidTactics(int32_t* tactics, int32_t nbTactics) noexcept
{
    if (tactics != nullptr && nbTactics == scanplugin::kNumTactics)
    {
        std::copy(std::begin(scanplugin::kTactics), std::end(scanplugin::kTactics), tactics);
        return 0;
    }
    try
    {
        logError("getValidTactics: room for " + std::to_string(nbTactics) + " tactics, the plugin has "
            + std::to_string(scanplugin::kNumTactics));
    }
    catch (std::exception const&)
    {
        // No memory for the message: the status still reports the failure.
    }
    return 1;
}

char const* SelectiveScanPlugin::getTimingCacheID() noexcept
{
    try
    {
        mTimingCacheId = scanplugin::timingCacheId(mAttrs);
        return mTimingCacheId.c_str();
    }
    catch (std::exception const& e)
    {
        logError(std::string{"getTimingCacheID: "} + e.what());
    }
    return nullptr; // no timing cache for this layer: it is timed on every build
}

int32_t SelectiveScanPlugin::setTactic(int32_t tactic) noexcept
{
    if (scanplugin::validTactic(tactic))
    {
        mTactic = tactic;
        return 0;
    }
    try
    {
        logError("setTactic: " + std::to_string(tactic)
            + " is not one of the plugin's tactics (an engine from another plugin version? rebuild it)");
    }
    catch (std::exception const&)
    {
        // No memory for the message: the status still reports the failure.
    }
    return 1;
}

int32_t SelectiveScanPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        if (nbOutputs != 1 || !resolve(nbInputs))
        {
            return 1;
        }
        auto dims = collectDims(in, nbInputs, [](nvinfer1::PluginTensorDesc const& d) { return d.dims; });
        ScanShape shape;
        std::string err;
        if (!scanplugin::inferShape(mLayout, dims.data(), &shape, &err))
        {
            logError(err);
            return 1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(std::string{"onShapeChange: "} + e.what());
    }
    return 1;
}

int32_t SelectiveScanPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    try
    {
        if (!mLayoutResolved && !resolveFromAttributes())
        {
            logError("enqueue before the input list was known (no has_* fields and no onShapeChange call)");
            return 1;
        }
        auto dims = collectDims(
            inputDesc, mLayout.nbInputs, [](nvinfer1::PluginTensorDesc const& d) { return d.dims; });
        ScanShape shape;
        std::string err;
        if (!scanplugin::inferShape(mLayout, dims.data(), &shape, &err))
        {
            logError(err);
            return 1;
        }
        if (shape.batch == 0 || shape.length == 0)
        {
            return 0; // nothing to compute
        }
        partool_scan_params_t const p = scanplugin::makeParams(
            shape, mAttrs, mLayout, kernelDtype(inputDesc[scanplugin::kU].type), inputs, outputs[0]);
        int const status = partool_selective_scan_fwd_cuda_variant(&p, mTactic, static_cast<void*>(stream));
        if (status != 0)
        {
            char const* what = partool_status_string(status);
            char const* detail = partool_last_error_message();
            logError(std::string{"kernel failed: "} + (what != nullptr ? what : "unknown status") + " ("
                + (detail != nullptr ? detail : "") + ")");
            return 1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(std::string{"enqueue: "} + e.what());
    }
    return 1;
}

nvinfer1::IPluginV3* SelectiveScanPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

nvinfer1::PluginFieldCollection const* SelectiveScanPlugin::getFieldsToSerialize() noexcept
{
    try
    {
        // Rebuilt on every call: the fields point into this object, which may be a copy of another.
        mSerialFields.clear();
        mSerialFields.emplace_back("delta_softplus", &mAttrs.deltaSoftplus, nvinfer1::PluginFieldType::kINT32, 1);
        mSerialFields.emplace_back("reverse", &mAttrs.reverse, nvinfer1::PluginFieldType::kINT32, 1);
        if (mLayoutResolved)
        {
            // Store the resolved presence so that the runtime plugin needs no input-count rule.
            mAttrs.hasD = mLayout.has(scanplugin::kD) ? 1 : 0;
            mAttrs.hasZ = mLayout.has(scanplugin::kZ) ? 1 : 0;
            mAttrs.hasDeltaBias = mLayout.has(scanplugin::kDeltaBias) ? 1 : 0;
        }
        for (auto const& f : {std::make_pair("has_D", &mAttrs.hasD), std::make_pair("has_z", &mAttrs.hasZ),
                 std::make_pair("has_delta_bias", &mAttrs.hasDeltaBias)})
        {
            if (*f.second >= 0)
            {
                mSerialFields.emplace_back(f.first, f.second, nvinfer1::PluginFieldType::kINT32, 1);
            }
        }
        mSerialCollection.nbFields = static_cast<int32_t>(mSerialFields.size());
        mSerialCollection.fields = mSerialFields.data();
        return &mSerialCollection;
    }
    catch (std::exception const& e)
    {
        logError(std::string{"getFieldsToSerialize: "} + e.what());
    }
    return nullptr;
}

// ---------------------------------------------------------------------------------------------------------------
// SelectiveScanPluginCreator

SelectiveScanPluginCreator::SelectiveScanPluginCreator() noexcept
{
    try
    {
        // The attributes TensorRT's ONNX parser copies from the node (it passes only the names listed here).
        for (char const* name : {"delta_softplus", "reverse", "has_D", "has_z", "has_delta_bias"})
        {
            mFields.emplace_back(name, nullptr, nvinfer1::PluginFieldType::kINT32, 1);
        }
        mCollection.nbFields = static_cast<int32_t>(mFields.size());
        mCollection.fields = mFields.data();
    }
    catch (std::exception const& e)
    {
        logError(std::string{"creator setup failed: "} + e.what());
    }
}

nvinfer1::IPluginV3* SelectiveScanPluginCreator::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    try
    {
        if (partool_kernels_abi_version() != PARTOOL_KERNELS_ABI_VERSION)
        {
            logError("libpartool_kernels ABI version " + std::to_string(partool_kernels_abi_version())
                + " does not match the plugin's " + std::to_string(PARTOOL_KERNELS_ABI_VERSION)
                + "; rebuild both with `partool plugins build`");
            return nullptr;
        }
        Attributes attrs;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            nvinfer1::PluginField const& f = fc->fields[i];
            std::string const err = scanplugin::applyField(attrs, f.name, fieldKind(f.type), f.data, f.length);
            if (!err.empty())
            {
                logError(err);
                return nullptr;
            }
        }
        return new SelectiveScanPlugin(attrs);
    }
    catch (std::exception const& e)
    {
        logError(std::string{"createPlugin: "} + e.what());
    }
    return nullptr;
}

nvinfer1::PluginFieldCollection const* SelectiveScanPluginCreator::getFieldNames() noexcept
{
    return &mCollection;
}

char const* SelectiveScanPluginCreator::getPluginName() const noexcept
{
    return scanplugin::kPluginName;
}

char const* SelectiveScanPluginCreator::getPluginVersion() const noexcept
{
    return scanplugin::kPluginVersion;
}

char const* SelectiveScanPluginCreator::getPluginNamespace() const noexcept
{
    return scanplugin::kPluginNamespace;
}

} // namespace trt
} // namespace partool
