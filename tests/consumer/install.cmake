# ctest fixture: install the tradeagg build in BUILD_DIR into a fresh PREFIX.
#   cmake -D BUILD_DIR=<build> -D PREFIX=<prefix> [-D CONFIG=<cfg>] -P install.cmake
# The prefix is emptied first so that a header removed from the tree cannot linger there.
foreach(var IN ITEMS BUILD_DIR PREFIX)
    if(NOT ${var})
        message(FATAL_ERROR "install.cmake: ${var} is not set")
    endif()
endforeach()

file(REMOVE_RECURSE "${PREFIX}")
set(config_args)
if(CONFIG)
    set(config_args --config "${CONFIG}")
endif()
execute_process(
    COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}" ${config_args}
    RESULT_VARIABLE result)
if(NOT result EQUAL 0)
    message(FATAL_ERROR "cmake --install ${BUILD_DIR} --prefix ${PREFIX} failed: ${result}")
endif()
