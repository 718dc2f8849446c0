# tests/quality: error-bar coverage, the tuner on held-aside data, and the
# llama2 forward pass. Some cases read ../shared/data (LSHATTN_SHARED_DATA):
# without it they print which file is missing and exit 77 (skipped), or fail
# when the environment sets LSHATTN_REQUIRE_DATA=1.
lshattn_add_test_folder(quality)
if(TARGET lshattn_test_quality)
  target_include_directories(lshattn_test_quality PRIVATE ${PROJECT_SOURCE_DIR}/examples)
endif()
