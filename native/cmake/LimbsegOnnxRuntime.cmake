# ONNX Runtime for liblimbseg: the shared library shipped by the `onnxruntime` Python wheel
# (onnxruntime/capi/libonnxruntime.so.1.<minor>.<patch>) plus the official C API headers, which the
# wheel does not ship. Defines the imported target `limbseg::onnxruntime` and these variables:
#   LIMBSEG_ORT_LIBRARY      (cache) path of libonnxruntime.so.*; default: asked from Python
#   LIMBSEG_ORT_INCLUDE_DIR  (cache) folder holding onnxruntime_c_api.h; default: fetched from npm
#   LIMBSEG_CACHE_DIR        (cache) where fetched headers are kept between builds
#   LIMBSEG_ORT_VERSION      version string reported by the library itself (e.g. 1.32.0)
#   LIMBSEG_ORT_STAGE_DIR    build-tree folder with the library under its soname (libonnxruntime.so.1)
#
# Header source: the npm package com.github.asus4.onnxruntime (MIT), which carries Microsoft's
# unmodified headers inside its iOS framework. Checked against the alternatives on the registries we
# can reach: onnxruntime-node / onnxruntime-common / onnxruntime-react-native ship no C headers,
# Debian 12 has no libonnxruntime-dev, and PyPI's onnxruntime wheels have no include folder.
# The tarball is ~150 MB but is only fetched once per machine (sha512-pinned), then cached.

set(LIMBSEG_ORT_HEADERS_NPM_PACKAGE "com.github.asus4.onnxruntime")
set(LIMBSEG_ORT_HEADERS_NPM_VERSION "0.4.9")
set(LIMBSEG_ORT_HEADERS_SHA512
    "064cf176e499f4891e0cfe90f25cf64c553689eee1492bd2ed921fccca28131a2ad02373267bae19a509ec8b288c182a3b8a2e0f58d76a1f0e63225b08ddbd16")
set(_limbseg_hdr_member "package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers")

# --- 1. The library -----------------------------------------------------------------------------
set(LIMBSEG_ORT_LIBRARY "" CACHE FILEPATH
    "libonnxruntime.so.* to link against (empty: the one in the Python interpreter's onnxruntime wheel)")

if(NOT LIMBSEG_ORT_LIBRARY)
  # Prefer the interpreter of an active venv, then the repository's own .venv (the README's set-up),
  # then whatever find_package finds. An explicit -DPython3_EXECUTABLE wins over all of these.
  if(NOT Python3_EXECUTABLE AND NOT DEFINED ENV{VIRTUAL_ENV} AND EXISTS "${PROJECT_SOURCE_DIR}/.venv/bin/python3")
    set(Python3_EXECUTABLE "${PROJECT_SOURCE_DIR}/.venv/bin/python3" CACHE FILEPATH "Python interpreter" FORCE)
  endif()
  set(Python3_FIND_VIRTUALENV FIRST)
  find_package(Python3 3.10 REQUIRED COMPONENTS Interpreter)
  execute_process(
    COMMAND "${Python3_EXECUTABLE}" -c [=[
import glob, importlib.util, os, sys
spec = importlib.util.find_spec("onnxruntime")
if spec is None or not spec.submodule_search_locations:
    sys.exit("onnxruntime is not installed for this interpreter")
capi = os.path.join(list(spec.submodule_search_locations)[0], "capi")
libs = sorted(glob.glob(os.path.join(capi, "libonnxruntime.so.1*")))
if not libs:
    sys.exit("no libonnxruntime.so.1* in " + capi)
print(libs[-1], end="")
]=]
    OUTPUT_VARIABLE _limbseg_ort_lib
    ERROR_VARIABLE _limbseg_ort_err
    RESULT_VARIABLE _limbseg_rc)
  if(NOT _limbseg_rc EQUAL 0)
    message(FATAL_ERROR
      "Cannot find ONNX Runtime through ${Python3_EXECUTABLE}: ${_limbseg_ort_err}\n"
      "Install the project into a venv first (python3 -m venv .venv && .venv/bin/pip install -e .), "
      "activate it or pass -DPython3_EXECUTABLE=..., or pass -DLIMBSEG_ORT_LIBRARY=/path/to/libonnxruntime.so.1.x")
  endif()
  set(LIMBSEG_ORT_LIBRARY "${_limbseg_ort_lib}" CACHE FILEPATH
      "libonnxruntime.so.* to link against (empty: the one in the Python interpreter's onnxruntime wheel)" FORCE)
endif()
if(NOT EXISTS "${LIMBSEG_ORT_LIBRARY}")
  message(FATAL_ERROR "LIMBSEG_ORT_LIBRARY=${LIMBSEG_ORT_LIBRARY} does not exist")
endif()
get_filename_component(_limbseg_ort_dir "${LIMBSEG_ORT_LIBRARY}" DIRECTORY)

# The wheel ships only libonnxruntime.so.1.x.y although its soname is libonnxruntime.so.1, so the
# loader cannot find it by soname there. Stage symlinks under the soname (and the provider plug-ins,
# which ONNX Runtime looks for beside its own path) in the build tree.
set(LIMBSEG_ORT_STAGE_DIR "${CMAKE_BINARY_DIR}/onnxruntime/lib")
file(MAKE_DIRECTORY "${LIMBSEG_ORT_STAGE_DIR}")
file(GLOB _limbseg_ort_providers "${_limbseg_ort_dir}/libonnxruntime_providers_*.so")
foreach(_f IN LISTS _limbseg_ort_providers)
  get_filename_component(_n "${_f}" NAME)
  file(CREATE_LINK "${_f}" "${LIMBSEG_ORT_STAGE_DIR}/${_n}" SYMBOLIC)
endforeach()
file(CREATE_LINK "${LIMBSEG_ORT_LIBRARY}" "${LIMBSEG_ORT_STAGE_DIR}/libonnxruntime.so.1" SYMBOLIC)
file(CREATE_LINK "${LIMBSEG_ORT_LIBRARY}" "${LIMBSEG_ORT_STAGE_DIR}/libonnxruntime.so" SYMBOLIC)

foreach(_ep IN ITEMS CUDA TENSORRT)
  string(TOLOWER "${_ep}" _ep_lower)
  if(LIMBSEG_WITH_${_ep} AND NOT EXISTS "${_limbseg_ort_dir}/libonnxruntime_providers_${_ep_lower}.so")
    message(FATAL_ERROR
      "LIMBSEG_WITH_${_ep}=ON but ${_limbseg_ort_dir} has no libonnxruntime_providers_${_ep_lower}.so: "
      "build against an ONNX Runtime GPU package (pip install onnxruntime-gpu matching your CUDA) "
      "or use a CPU preset")
  endif()
endforeach()

# --- 2. The headers -----------------------------------------------------------------------------
if(DEFINED ENV{LIMBSEG_CACHE_DIR})
  set(_limbseg_cache_default "$ENV{LIMBSEG_CACHE_DIR}")
elseif(DEFINED ENV{XDG_CACHE_HOME})
  set(_limbseg_cache_default "$ENV{XDG_CACHE_HOME}/limbseg-rt")
else()
  set(_limbseg_cache_default "$ENV{HOME}/.cache/limbseg-rt")
endif()
set(LIMBSEG_CACHE_DIR "${_limbseg_cache_default}" CACHE PATH "Cache for downloaded build inputs (ONNX Runtime headers)")
set(LIMBSEG_ORT_INCLUDE_DIR "" CACHE PATH "Folder with onnxruntime_c_api.h (empty: fetch from npm and cache)")

function(_limbseg_fetch_ort_headers dest)
  string(RANDOM LENGTH 8 salt)
  set(work "${LIMBSEG_CACHE_DIR}/ort-headers/.fetch-${LIMBSEG_ORT_HEADERS_NPM_VERSION}-${salt}")
  file(REMOVE_RECURSE "${work}")
  file(MAKE_DIRECTORY "${work}")
  set(tgz "${work}/${LIMBSEG_ORT_HEADERS_NPM_PACKAGE}-${LIMBSEG_ORT_HEADERS_NPM_VERSION}.tgz")
  find_program(LIMBSEG_NPM npm)
  if(LIMBSEG_NPM)
    message(STATUS "Fetching ONNX Runtime headers: npm pack ${LIMBSEG_ORT_HEADERS_NPM_PACKAGE}@${LIMBSEG_ORT_HEADERS_NPM_VERSION}")
    execute_process(
      COMMAND "${LIMBSEG_NPM}" pack "${LIMBSEG_ORT_HEADERS_NPM_PACKAGE}@${LIMBSEG_ORT_HEADERS_NPM_VERSION}"
              --pack-destination "${work}" --silent --ignore-scripts
      WORKING_DIRECTORY "${work}"
      RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "npm pack failed (${rc}): ${err}\nPass -DLIMBSEG_ORT_INCLUDE_DIR=<folder with onnxruntime_c_api.h> to build offline.")
    endif()
  else()
    # No npm client: the same tarball straight from the npm registry.
    set(url "https://registry.npmjs.org/${LIMBSEG_ORT_HEADERS_NPM_PACKAGE}/-/${LIMBSEG_ORT_HEADERS_NPM_PACKAGE}-${LIMBSEG_ORT_HEADERS_NPM_VERSION}.tgz")
    message(STATUS "Fetching ONNX Runtime headers (no npm found): ${url}")
    file(DOWNLOAD "${url}" "${tgz}" STATUS st)
    list(GET st 0 rc)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "Download of ${url} failed: ${st}")
    endif()
  endif()
  file(SHA512 "${tgz}" got)
  if(NOT got STREQUAL LIMBSEG_ORT_HEADERS_SHA512)
    file(REMOVE_RECURSE "${work}")
    message(FATAL_ERROR "${tgz}: sha512 ${got} is not the pinned ${LIMBSEG_ORT_HEADERS_SHA512}")
  endif()
  file(ARCHIVE_EXTRACT INPUT "${tgz}" DESTINATION "${work}/x"
       PATTERNS "${_limbseg_hdr_member}/*.h" "package/LICENSE" "package/package.json")
  file(GLOB headers "${work}/x/${_limbseg_hdr_member}/*.h")
  if(NOT headers)
    message(FATAL_ERROR "${tgz} has no headers under ${_limbseg_hdr_member}")
  endif()
  file(MAKE_DIRECTORY "${work}/out/include")
  file(COPY ${headers} DESTINATION "${work}/out/include")
  file(COPY "${work}/x/package/LICENSE" DESTINATION "${work}/out")
  file(WRITE "${work}/out/SOURCE.txt"
       "ONNX Runtime C/C++ API headers (MIT, Microsoft) taken unmodified from the npm package "
       "${LIMBSEG_ORT_HEADERS_NPM_PACKAGE}@${LIMBSEG_ORT_HEADERS_NPM_VERSION} (${_limbseg_hdr_member}); "
       "tarball sha512 ${LIMBSEG_ORT_HEADERS_SHA512}\n")
  # Rename into place last, so an interrupted fetch never leaves a half-filled cache entry.
  get_filename_component(parent "${dest}" DIRECTORY)
  file(MAKE_DIRECTORY "${parent}")
  file(RENAME "${work}/out" "${dest}" RESULT mv_rc)
  if(NOT mv_rc STREQUAL "0" AND NOT EXISTS "${dest}/include/onnxruntime_c_api.h")
    message(FATAL_ERROR "cannot move the ONNX Runtime headers into ${dest}: ${mv_rc}")
  endif()
  file(REMOVE_RECURSE "${work}")
endfunction()

if(NOT LIMBSEG_ORT_INCLUDE_DIR)
  set(_limbseg_hdr_cache "${LIMBSEG_CACHE_DIR}/ort-headers/${LIMBSEG_ORT_HEADERS_NPM_PACKAGE}-${LIMBSEG_ORT_HEADERS_NPM_VERSION}")
  if(NOT EXISTS "${_limbseg_hdr_cache}/include/onnxruntime_c_api.h")
    _limbseg_fetch_ort_headers("${_limbseg_hdr_cache}")
  else()
    message(STATUS "ONNX Runtime headers from cache: ${_limbseg_hdr_cache}")
  endif()
  set(_limbseg_ort_inc "${_limbseg_hdr_cache}/include")
else()
  set(_limbseg_ort_inc "${LIMBSEG_ORT_INCLUDE_DIR}")
endif()
if(NOT EXISTS "${_limbseg_ort_inc}/onnxruntime_c_api.h")
  message(FATAL_ERROR "${_limbseg_ort_inc} has no onnxruntime_c_api.h")
endif()

# --- 3. Do header and library agree? -------------------------------------------------------------
# ORT_API_VERSION tracks the release's minor version; a library serves every API version up to its
# own. Ask the library itself (a header newer than the library would make GetApi return NULL).
try_run(_limbseg_probe_run _limbseg_probe_compile
  SOURCES "${CMAKE_CURRENT_LIST_DIR}/ort_version_probe.c"
  CMAKE_FLAGS "-DINCLUDE_DIRECTORIES=${_limbseg_ort_inc}"
  LINK_OPTIONS "-Wl,-rpath,${LIMBSEG_ORT_STAGE_DIR}"
  LINK_LIBRARIES "${LIMBSEG_ORT_STAGE_DIR}/libonnxruntime.so.1"
  COMPILE_OUTPUT_VARIABLE _limbseg_probe_cout
  RUN_OUTPUT_VARIABLE _limbseg_probe_out)
if(NOT _limbseg_probe_compile)
  message(FATAL_ERROR "Cannot build against ONNX Runtime (${LIMBSEG_ORT_LIBRARY}, headers ${_limbseg_ort_inc}):\n${_limbseg_probe_cout}")
endif()
if(NOT _limbseg_probe_run EQUAL 0)
  message(FATAL_ERROR "ONNX Runtime header/library mismatch: ${_limbseg_probe_out}")
endif()
string(REGEX MATCH "library=([0-9.]+) header_api=([0-9]+)" _m "${_limbseg_probe_out}")
set(LIMBSEG_ORT_VERSION "${CMAKE_MATCH_1}")
set(LIMBSEG_ORT_HEADER_API "${CMAKE_MATCH_2}")
message(STATUS "ONNX Runtime ${LIMBSEG_ORT_VERSION}: ${LIMBSEG_ORT_LIBRARY} (headers: C API ${LIMBSEG_ORT_HEADER_API}, ${_limbseg_ort_inc})")

add_library(limbseg_onnxruntime SHARED IMPORTED GLOBAL)
set_target_properties(limbseg_onnxruntime PROPERTIES
  IMPORTED_LOCATION "${LIMBSEG_ORT_STAGE_DIR}/libonnxruntime.so.1"
  IMPORTED_SONAME "libonnxruntime.so.1"
  INTERFACE_INCLUDE_DIRECTORIES "${_limbseg_ort_inc}")
add_library(limbseg::onnxruntime ALIAS limbseg_onnxruntime)
