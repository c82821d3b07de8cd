// Entry points of libpartool_trt_plugins.so, the "plugin shared library" TensorRT 10 loads with
// IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, Python registry.load_library, engines that serialize
// the library with --setPluginsToSerialize). TensorRT looks up getCreators (IPluginV3 creators) and
// setLoggerFinder by name. getPluginCreators is not exported: it is the deprecated entry for IPluginCreator
// (V2) objects and this library has none. The library does not register itself when loaded (loadLibrary fails
// when a creator is already registered); libpartool_trt_plugins_static.so does that for --staticPlugins.
#include "selective_scan_plugin.h"

#define PARTOOL_TRT_EXPORT extern "C" __attribute__((visibility("default")))

PARTOOL_TRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) noexcept
{
    static partool::trt::SelectiveScanPluginCreator sSelectiveScanCreator;
    static nvinfer1::IPluginCreatorInterface* const kCreators[] = {&sSelectiveScanCreator};
    nbCreators = static_cast<int32_t>(sizeof(kCreators) / sizeof(kCreators[0]));
    return kCreators;
}

PARTOOL_TRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    partool::trt::setPluginLoggerFinder(finder);
}
