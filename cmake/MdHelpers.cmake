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

# md_add_test(NAME name SRCS a.cc... DEPS libs... [LABELS l...] [ASAN]
#             [TIMEOUT seconds])
# One GoogleTest binary per call, registered with CTest. Every test has a
# timeout (default 600 s), so a hang fails instead of stalling CI.
function(md_add_test)
  cmake_parse_arguments(T "ASAN" "NAME;TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
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
