# Small helpers shared by every folder's CMakeLists.txt.

# LibTorch's exported targets carry its include dirs as non-system; mark them
# system so -Wall stays about our code.
function(md_torch_target target)
  target_include_directories(${target} SYSTEM PUBLIC ${TORCH_INCLUDE_DIRS})
  target_link_libraries(${target} PUBLIC ${TORCH_LIBRARIES})
endfunction()

# Picks CUDA when asked for and available; the CPU build never needs it.
macro(md_configure_cuda)
  set(MD_HAVE_CUDA OFF)
  if(MD_ENABLE_CUDA)
    if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES)
      set(MD_HAVE_CUDA ON)
      message(STATUS "moondream-serve: CUDA LibTorch found")
    else()
      message(WARNING "MD_ENABLE_CUDA=ON but the LibTorch found has no CUDA; building for CPU")
    endif()
  endif()
endmacro()

# Libraries whose ThreadSanitizer twins (md_tsan_twin) the tsan tests link.
set(MD_TSAN_TWINNED "" CACHE INTERNAL "")
set(MD_TSAN_FLAGS -fsanitize=thread -fno-omit-frame-pointer)

# md_tsan_twin(target): `target`_tsan, the same static library built with
# -fsanitize=thread from the same sources, linked against the twins of the
# libraries already twinned (so the scheduler and the service are both
# instrumented) and the originals of the rest (the model: uninstrumented code
# is not checked, and LibTorch is not instrumented anyway).
function(md_tsan_twin target)
  get_target_property(dir ${target} SOURCE_DIR)
  get_target_property(srcs ${target} SOURCES)
  set(abs_srcs)
  foreach(src IN LISTS srcs)
    if(IS_ABSOLUTE "${src}")
      list(APPEND abs_srcs "${src}")
    else()
      list(APPEND abs_srcs "${dir}/${src}")
    endif()
  endforeach()
  get_target_property(libs ${target} LINK_LIBRARIES)
  foreach(twinned IN LISTS MD_TSAN_TWINNED)
    list(TRANSFORM libs REPLACE "^${twinned}$" "${twinned}_tsan")
  endforeach()
  add_library(${target}_tsan STATIC EXCLUDE_FROM_ALL ${abs_srcs})
  target_include_directories(${target}_tsan PUBLIC ${PROJECT_SOURCE_DIR})
  target_compile_options(${target}_tsan PRIVATE ${MD_TSAN_FLAGS})
  target_link_libraries(${target}_tsan PUBLIC ${libs})
  md_torch_target(${target}_tsan)
  set(MD_TSAN_TWINNED ${MD_TSAN_TWINNED} ${target} CACHE INTERNAL "")
endfunction()

# md_add_test(NAME name SRCS a.cc... DEPS libs... [LABELS l...] [ASAN] [TSAN]
#             [TIMEOUT seconds])
# One GoogleTest binary per call, registered with CTest. Every test has a
# timeout (default 600 s), so a hang fails instead of stalling CI.
# TSAN adds name_tsan to the `tsan` label (MD_ENABLE_TSAN_TESTS): the same
# test built with -fsanitize=thread against the md_tsan_twin libraries, run
# by tests/run_tsan.sh with the instrumented Abseil of scripts/tsan-absl.sh.
function(md_add_test)
  cmake_parse_arguments(T "ASAN;TSAN" "NAME;TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  if(T_TSAN AND MD_ENABLE_TSAN_TESTS)
    md_add_tsan_test(${T_NAME} ${T_TIMEOUT} "${T_SRCS}" "${T_DEPS}")
  endif()
  add_executable(${T_NAME} ${T_SRCS})
  target_compile_options(${T_NAME} PRIVATE ${MD_WARNINGS})
  target_link_libraries(${T_NAME} PRIVATE ${T_DEPS} GTest::gtest GTest::gtest_main GTest::gmock)
  target_compile_definitions(${T_NAME} PRIVATE
    MD_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  if(T_ASAN)
    target_compile_options(${T_NAME} PRIVATE -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
    target_link_options(${T_NAME} PRIVATE -fsanitize=address,undefined)
  endif()
  add_test(NAME ${T_NAME} COMMAND ${T_NAME})
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "OMP_NUM_THREADS=2;OMP_WAIT_POLICY=PASSIVE")
endfunction()

# An end-to-end test in Python against the real binaries (label e2e):
#   md_add_e2e_script(NAME name SCRIPT file.py ARGS arg...)
function(md_add_e2e_script)
  cmake_parse_arguments(T "" "NAME;SCRIPT" "ARGS" ${ARGN})
  add_test(NAME ${T_NAME}
    COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/${T_SCRIPT} ${T_ARGS})
  set_tests_properties(${T_NAME} PROPERTIES LABELS e2e TIMEOUT 600
    ENVIRONMENT "OMP_NUM_THREADS=2;OMP_WAIT_POLICY=PASSIVE")
endfunction()

# The ThreadSanitizer twin of a test (see md_add_test's TSAN).
function(md_add_tsan_test name timeout srcs deps)
  foreach(twinned IN LISTS MD_TSAN_TWINNED)
    list(TRANSFORM deps REPLACE "^${twinned}$" "${twinned}_tsan")
  endforeach()
  set(exe ${name}_tsan)
  add_executable(${exe} ${srcs})
  target_compile_options(${exe} PRIVATE ${MD_TSAN_FLAGS})
  target_link_options(${exe} PRIVATE -fsanitize=thread)
  target_link_libraries(${exe} PRIVATE ${deps} GTest::gtest GTest::gtest_main GTest::gmock)
  target_compile_definitions(${exe} PRIVATE MD_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  add_test(NAME ${exe} COMMAND ${PROJECT_SOURCE_DIR}/tests/run_tsan.sh
    ${MD_TSAN_ABSL_DIR} $<TARGET_FILE:${exe}>)
  set_tests_properties(${exe} PROPERTIES LABELS tsan TIMEOUT ${timeout}
    ENVIRONMENT "OMP_NUM_THREADS=1;OMP_WAIT_POLICY=PASSIVE")
endfunction()
